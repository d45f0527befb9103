//! The filter's lifecycle against the kernel: rule counters that survive an
//! apply by id, a dry run that leaves every kernel object byte for byte as
//! it was, and commit-confirm, whose rollback the kernel makes by itself
//! after the applying process was killed. Traffic is real (UDP between two
//! namespaces); expected counts are what the test sent.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::filter::{attach_filter, rules_file, show};
use common::{kstate, run, Ran, VethPair, ADDR};
use serde_json::{json, Value};

/// Bytes XDP sees of a UDP datagram with `payload` bytes over IPv4.
fn frame(payload: u64) -> u64 {
    14 + 20 + 8 + payload
}

fn udp(net: &VethPair, port: u16, count: usize, payload: usize) {
    net.send_udp(SocketAddr::new(ADDR.parse().unwrap(), port), count, payload);
}

/// (id, packets, bytes) of each rule, in order.
fn counts(net: &VethPair) -> Vec<(String, u64, u64)> {
    show(net)["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["packets"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn apply(net: &VethPair, rules: &Value, extra: &[&str]) -> Ran {
    let file = rules_file(rules);
    let mut args = vec![
        "filter",
        "apply",
        &net.dev,
        file.path.to_str().unwrap(),
        "-j",
    ];
    args.extend_from_slice(extra);
    net.meshbpf(&args)
}

privileged_test!(
    /// Rules keep their counts across an apply exactly when their id
    /// survives (given, or derived from what they match), and a reset
    /// zeroes one rule or all.
    fn rule_counters_follow_ids_across_applies_and_resets() {
        let net = VethPair::new();
        attach_filter(
            &net,
            &json!({"rules": [
                {"id": "web", "action": "allow", "protocol": "udp", "dport": 1000},
                {"action": "deny", "protocol": "udp", "dport": 2000},
                {"action": "allow", "protocol": "udp", "dport": 3000}]}),
        );
        udp(&net, 1000, 5, 10);
        udp(&net, 2000, 3, 20);
        udp(&net, 3000, 2, 30);
        let before = counts(&net);
        assert_eq!(before[0], ("web".into(), 5, 5 * frame(10)));
        assert_eq!((before[1].1, before[1].2), (3, 3 * frame(20)));
        assert_eq!((before[2].1, before[2].2), (2, 2 * frame(30)));
        let port_3000 = before[2].0.clone();

        // The dport 3000 rule moves up and is renamed (its derived id
        // stays), "web" changes its action (its given id stays), the dport
        // 2000 rule goes and a dport 2001 rule is new.
        let applied = apply(
            &net,
            &json!({"rules": [
                {"action": "allow", "protocol": "udp", "dport": 3000, "name": "renamed"},
                {"id": "web", "action": "deny", "protocol": "udp", "dport": 1000},
                {"action": "deny", "protocol": "udp", "dport": 2001}]}),
            &[],
        )
        .ok()
        .json();
        assert_eq!(applied["carried"], 2, "{applied}");
        let after = counts(&net);
        assert_eq!(after[0], (port_3000.clone(), 2, 2 * frame(30)));
        assert_eq!(after[1], ("web".into(), 5, 5 * frame(10)));
        assert_eq!((after[2].1, after[2].2), (0, 0));
        assert_ne!(after[2].0, before[1].0, "another match is another rule");

        udp(&net, 1000, 4, 10);
        udp(&net, 2001, 1, 40);
        let counted = counts(&net);
        assert_eq!(counted[1], ("web".into(), 9, 9 * frame(10)));
        assert_eq!((counted[2].1, counted[2].2), (1, frame(40)));

        let reset = net
            .meshbpf(&[
                "filter", "counters", "reset", &net.dev, "--rule", "web", "-j",
            ])
            .ok()
            .json();
        assert_eq!(reset["reset"], json!(["web"]));
        udp(&net, 1000, 1, 10);
        let once = counts(&net);
        assert_eq!(once[0], (port_3000, 2, 2 * frame(30)), "only web is reset");
        assert_eq!(once[1], ("web".into(), 1, frame(10)));

        let missing = net.meshbpf(&["filter", "counters", "reset", &net.dev, "--rule", "nope"]);
        assert_eq!(missing.code, 1);
        assert!(missing.stderr.contains("has id \"nope\""), "{missing:?}");
        net.meshbpf(&["filter", "counters", "reset", &net.dev]).ok();
        assert!(counts(&net).iter().all(|(_, p, b)| (*p, *b) == (0, 0)));
    }
);

/// Every object the filter's pins hold, as bpftool dumps it: the kernel's
/// view, not meshbpf's.
fn kernel_objects(dir: &Path) -> BTreeMap<String, String> {
    let mut objects = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = if name.starts_with("prog") {
            ["prog", "show"]
        } else if name.starts_with("link") {
            ["link", "show"]
        } else if is_ring_buffer(&path) {
            // A ring buffer has no entries to dump (bpftool refuses).
            ["map", "show"]
        } else {
            ["map", "dump"]
        };
        let out = run(Command::new("bpftool")
            .args(["-j", kind[0], kind[1], "pinned"])
            .arg(&path));
        assert!(out.status.success(), "bpftool {kind:?} {name}: {out:?}");
        objects.insert(name, String::from_utf8(out.stdout).unwrap());
    }
    objects
}

fn is_ring_buffer(pin: &Path) -> bool {
    let out = run(Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    shown["type"] == "ringbuf"
}

const OLD: &str = r#"{"rules": [
    {"id": "ssh", "action": "allow", "protocol": "tcp", "dport": 22},
    {"id": "dns", "action": "allow", "protocol": "udp", "dport": 53},
    {"action": "deny", "src": "10.0.0.0/8"},
    {"id": "gone", "action": "deny", "protocol": "udp", "dport": 9}]}"#;
const NEW: &str = r#"{"default": "deny", "rules": [
    {"action": "deny", "src": "10.0.0.0/8"},
    {"id": "ssh", "action": "allow", "protocol": "tcp", "dport": 22, "src": "192.0.2.0/24"},
    {"id": "dns", "action": "allow", "protocol": "udp", "dport": 53},
    {"id": "web", "action": "allow", "protocol": "tcp", "dport": 443},
    {"id": "web-v4", "action": "allow", "protocol": "tcp", "dport": 443, "src": "192.0.2.0/24"}]}"#;

privileged_test!(
    /// `filter diff` and `apply --dry-run` print the exact change of a
    /// fixture and leave the kernel's objects byte for byte as they were.
    fn a_dry_run_prints_the_exact_diff_and_changes_nothing() {
        let net = VethPair::new();
        let old: Value = serde_json::from_str(OLD).unwrap();
        attach_filter(&net, &old);
        let denied_id = show(&net)["rules"][2]["id"].clone();
        let dir = net.pin_dir().join("xdp_mesh_filter");
        let before = kernel_objects(&dir);
        let new = rules_file(&serde_json::from_str(NEW).unwrap());
        let new = new.path.to_str().unwrap();

        let diff = net
            .meshbpf(&["filter", "diff", &net.dev, new, "-j"])
            .ok()
            .json();
        let dry = net
            .meshbpf(&["filter", "apply", &net.dev, new, "--dry-run", "-j"])
            .ok()
            .json();
        assert_eq!(kernel_objects(&dir), before, "a dry run touched the kernel");
        for report in [&diff, &dry] {
            assert_eq!(report["would_apply"], true);
            assert_eq!(
                report["added"],
                json!([
                    {"index": 3, "id": "web", "action": "allow", "protocol": "tcp", "dport": 443},
                    {"index": 4, "id": "web-v4", "action": "allow", "protocol": "tcp", "dport": 443,
                     "src": "192.0.2.0/24"}])
            );
            assert_eq!(
                report["removed"],
                json!([{"index": 3, "id": "gone", "action": "deny", "protocol": "udp", "dport": 9}])
            );
            assert_eq!(report["changed"].as_array().unwrap().len(), 1);
            let changed = &report["changed"][0];
            assert_eq!(
                (
                    &changed["id"],
                    &changed["old_index"],
                    &changed["index"],
                    &changed["fields"]
                ),
                (&json!("ssh"), &json!(0), &json!(1), &json!(["src"]))
            );
            assert_eq!(
                report["moved"],
                json!([{"id": denied_id, "old_index": 2, "index": 0}])
            );
            // dns, and the moved rule, whose content is the same.
            assert_eq!(report["unchanged"], 2);
            assert_eq!(
                report["settings"],
                json!([{"field": "default", "before": "allow", "after": "deny"}])
            );
            assert_eq!(
                report["unreachable"],
                json!([{"index": 4, "id": "web-v4", "by": 3, "by_id": "web"}])
            );
        }

        // While a confirmation is pending a dry run says it would not apply.
        apply(&net, &old, &["--confirm", "1h"]).ok();
        let refused = net.meshbpf(&["filter", "apply", &net.dev, new, "--dry-run", "-j"]);
        assert_eq!(refused.code, 1, "{refused:?}");
        assert_eq!(refused.json()["would_apply"], false);
        net.meshbpf(&["filter", "rollback", &net.dev]).ok();
    }
);

/// UDP datagrams from the peer to ADDR:5001 every 10 ms, and when each one
/// that got through arrived.
struct Prober {
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const PROBE_PORT: u16 = 5001;

impl Prober {
    fn start(net: &VethPair) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let socket = VethPair::in_netns(&net.ns, || UdpSocket::bind((ADDR, PROBE_PORT)).unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (s, a) = (Arc::clone(&stop), Arc::clone(&arrivals));
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::SeqCst) {
                if socket.recv(&mut buf).is_ok() {
                    a.lock().unwrap().push(Instant::now());
                }
            }
        });
        let peer_ns = net.peer_ns.clone();
        let s = Arc::clone(&stop);
        let sender = std::thread::spawn(move || {
            VethPair::in_netns(&peer_ns, || {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !s.load(Ordering::SeqCst) {
                    socket.send_to(b"probe", (ADDR, PROBE_PORT)).unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        });
        Prober {
            stop,
            arrivals,
            threads: vec![receiver, sender],
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.arrivals.lock().unwrap().clone()
    }
}

/// The rule set that cuts the probes (and would cut an operator's SSH).
fn lockout() -> Value {
    json!({"default": "deny", "rules": []})
}

/// The bpf() call of `filter apply --confirm` that arms the rollback, and
/// how many bpf() calls the command makes in all, from one run under strace
/// that is then rolled back.
fn arming_call(net: &VethPair, rules: &Path) -> (usize, usize) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let ran = Ran::from(run(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.ns))
        .args(["--", "strace", "-qq", "-e", "trace=bpf", "-o"])
        .arg(log.path())
        .arg(common::BIN)
        .args(["filter", "apply", &net.dev])
        .arg(rules)
        .args(["--confirm", "1h"])));
    assert_eq!(ran.code, 0, "{ran:?}");
    net.meshbpf(&["filter", "rollback", &net.dev]).ok();
    let calls: Vec<String> = std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("bpf("))
        .map(str::to_owned)
        .collect();
    let arm = calls
        .iter()
        .position(|c| c.starts_with("bpf(BPF_PROG_TEST_RUN"))
        .unwrap_or_else(|| panic!("no BPF_PROG_TEST_RUN in {calls:#?}"));
    (arm + 1, calls.len())
}

privileged_test!(
    /// `apply --confirm 2s` of a set that cuts the test's own traffic, its
    /// process killed by SIGKILL on the first bpf() call after the arming
    /// one: no meshbpf process runs any more, the set stays in force, and
    /// the kernel puts the previous set back on time (within 10 % of 2 s).
    fn a_killed_apply_with_confirm_rolls_back_by_itself_on_time() {
        let net = VethPair::new();
        attach_filter(&net, &json!({"rules": []}));
        let cut = rules_file(&lockout());
        let (arm, calls) = arming_call(&net, &cut.path);
        assert!(
            arm < calls,
            "the arming call is not the last: {arm} of {calls}"
        );

        let prober = Prober::start(&net);
        common::wait_for(Duration::from_secs(5), || {
            (!prober.arrivals().is_empty()).then_some(())
        })
        .expect("the probes pass before the apply");
        let killed = Ran::from(run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.ns))
            .args(["--", "strace", "-qq"])
            .args(kstate::kill_at_call("bpf", arm + 1))
            .arg("--")
            .arg(common::BIN)
            .args(["filter", "apply", &net.dev])
            .arg(&cut.path)
            .args(["--confirm", "2s"])));
        let killed_at = Instant::now();
        // strace dies of the signal its tracee died of.
        assert_eq!(killed.code, -1, "not killed: {killed:?}");
        let shown = show(&net);
        assert_eq!(shown["confirmation"]["state"], "pending", "{shown}");
        assert_eq!(shown["default"], "deny");

        let cut_from = killed_at + Duration::from_millis(100);
        let back = common::wait_for(Duration::from_secs(5), || {
            prober.arrivals().into_iter().find(|t| *t > cut_from)
        })
        .expect("the probes came back");
        prober.stop();
        let gap = back.duration_since(killed_at);
        assert!(
            gap >= Duration::from_millis(1800) && gap <= Duration::from_millis(2200),
            "the previous set came back {gap:?} after the kill, not 2 s"
        );
        let shown = show(&net);
        assert_eq!(shown["confirmation"]["state"], "rolled_back", "{shown}");
        assert_eq!(shown["default"], "allow");
        assert!(shown["confirmation"]["settled_at"].is_string(), "{shown}");
    }
);

privileged_test!(
    /// A confirmed apply stays after its window, and its set becomes the
    /// one the boot unit applies; a rollback by hand restores at once.
    fn a_confirmed_apply_stays_and_a_rollback_restores_at_once() {
        let net = VethPair::new();
        let state = tempfile::tempdir().unwrap();
        let with_state = |args: &[&str]| {
            let mut all = vec!["--state-dir", state.path().to_str().unwrap()];
            all.extend_from_slice(args);
            net.meshbpf(&all)
        };
        let open = rules_file(&json!({"rules": []}));
        let cut = rules_file(&lockout());
        let (open, cut) = (open.path.to_str().unwrap(), cut.path.to_str().unwrap());
        with_state(&["attach", &net.dev, "--filter", open]).ok();
        let saved = state
            .path()
            .join("filter")
            .join(format!("{}.json", net.dev));
        let settled = |path: &Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        assert_eq!(settled(&saved)["default"], "allow");

        // Long enough for `health` (which probes the kernel) on a loaded
        // machine; the test then waits the window out.
        let window = Duration::from_secs(8);
        let applied_at = Instant::now();
        let applied = with_state(&["filter", "apply", &net.dev, cut, "--confirm", "8s", "-j"])
            .ok()
            .json();
        assert_eq!(applied["confirmation"]["state"], "pending", "{applied}");
        assert_eq!(
            settled(&saved)["default"],
            "allow",
            "not settled before confirm"
        );
        let health = net.meshbpf(&["health", "-j"]).json();
        let check = health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "filter_confirmation" && c["interface"] == net.dev.as_str())
            .unwrap_or_else(|| panic!("no filter_confirmation check: {health}"))
            .clone();
        assert_eq!(check["status"], "warn", "{check}");
        let confirmed = with_state(&["filter", "confirm", &net.dev, "-j"])
            .ok()
            .json();
        assert_eq!(confirmed["state"], "confirmed");
        assert_eq!(settled(&saved)["default"], "deny");
        std::thread::sleep((applied_at + window + Duration::from_millis(500)) - Instant::now());
        let shown = show(&net);
        assert_eq!(shown["default"], "deny", "the confirmed set stays: {shown}");
        assert_eq!(shown["confirmation"]["state"], "confirmed");
        let again = with_state(&["filter", "confirm", &net.dev, "-j"])
            .ok()
            .json();
        assert_eq!(
            again["already"], true,
            "a re-run finishes, it does not fail"
        );
        assert_eq!(settled(&saved)["default"], "deny");

        let armed = with_state(&["filter", "apply", &net.dev, open, "--confirm", "1h", "-j"])
            .ok()
            .json();
        assert_eq!(show(&net)["default"], "allow");
        // Re-running the same apply (as after a kill) changes nothing, not
        // even the deadline.
        let rerun = with_state(&["filter", "apply", &net.dev, open, "--confirm", "2h", "-j"])
            .ok()
            .json();
        assert_eq!(
            rerun["confirmation"]["deadline"], armed["confirmation"]["deadline"],
            "{rerun}"
        );
        assert_eq!(rerun["generation"], armed["generation"]);
        let refused = with_state(&["filter", "apply", &net.dev, cut]);
        assert_eq!(refused.code, 1);
        assert!(
            refused.stderr.contains("a confirmation is pending"),
            "{refused:?}"
        );
        let rolled = with_state(&["filter", "rollback", &net.dev, "-j"])
            .ok()
            .json();
        assert_eq!(rolled["state"], "rolled_back");
        assert_eq!(rolled["already"], false);
        let again = with_state(&["filter", "rollback", &net.dev, "-j"])
            .ok()
            .json();
        assert_eq!(
            again["already"], true,
            "a re-run finishes, it does not fail"
        );
        let late = with_state(&["filter", "confirm", &net.dev]);
        assert_eq!(
            late.code, 1,
            "a rolled-back set cannot be confirmed: {late:?}"
        );
        let shown = show(&net);
        assert_eq!(shown["default"], "deny", "{shown}");
        assert_eq!(
            settled(&saved)["default"],
            "deny",
            "a rollback keeps the settled file"
        );
        let prober = Prober::start(&net);
        std::thread::sleep(Duration::from_millis(300));
        assert!(prober.stop().is_empty(), "the restored set cuts the probes");
    }
);
