//! Regression tests of the interface commands killed at the calls where
//! they used to strand their state (issue 15, items 1, 2, 3, 10 and 12):
//! each finds its kill point in an uninterrupted run under strace (the call
//! after a named one), kills the command there (`strace -e
//! inject=SYSCALL:signal=KILL:when=N`), and checks the kernel state (read
//! with iproute2, tc and BPF_PROG_QUERY, never with meshbpf), what `health`
//! names and what the next command or `health --fix` makes of it.
//! tests/crash.rs kills every command at every call.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kstate, run, PinRoot, VethPair, BIN};

const TRACED: &str = "bpf,unlink,unlinkat,mkdir,mkdirat,rename,renameat,renameat2,sendto,sendmsg";
const RULES: &str = r#"{ "default": "allow", "rules": [
    { "action": "deny", "src": "198.51.100.0/24" },
    { "action": "deny", "protocol": "udp", "dport": 9 } ] }"#;
const RULES2: &str = r#"{ "default": "allow", "rules": [
    { "action": "deny", "src": "203.0.113.0/24" } ] }"#;
const CLASSES: &str = r#"{ "classes": { "fast": { "priority": "1:10" } },
    "rules": [ { "class": "fast", "protocol": "udp", "dport": 5001 } ] }"#;

/// What runs on the interface, by program name, and which pins exist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    xdp: Option<String>,
    tc: Vec<String>,
    pins: BTreeSet<String>,
}

struct Rig {
    net: VethPair,
    root: PinRoot,
    files: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let files = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("rules.json", RULES),
            ("rules2.json", RULES2),
            ("classes.json", CLASSES),
        ] {
            fs::write(files.path().join(name), text).unwrap();
        }
        Rig {
            net: VethPair::new(),
            root: PinRoot::new(),
            files,
        }
    }

    /// The command line of `args`, with DEV and FILE names filled in.
    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = args
            .iter()
            .map(|a| match *a {
                "DEV" => self.net.dev.clone(),
                f if f.ends_with(".json") => self.files.path().join(f).display().to_string(),
                a => a.to_string(),
            })
            .collect();
        argv.extend(["--bpffs".into(), self.root.path.display().to_string()]);
        argv
    }

    /// Runs meshbpf in the interface's namespace, optionally under strace.
    fn meshbpf(&self, strace: &[String], args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.net.ns))
            .arg("--");
        if strace.is_empty() {
            cmd.arg(BIN);
        } else {
            cmd.arg("strace").args(strace).arg(BIN);
        }
        run(cmd.args(self.argv(args)))
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.meshbpf(&[], args);
        assert!(
            out.status.success(),
            "meshbpf {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn iface_pins(&self) -> PathBuf {
        self.root.path.join("net").join(&self.net.dev)
    }

    fn state(&self) -> State {
        let running = kstate::running_on(&self.net);
        let (xdp, tc): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|r| r.hook.starts_with("xdp"));
        let mut tc: Vec<String> = tc.into_iter().map(|r| r.name).collect();
        tc.sort();
        State {
            xdp: xdp.into_iter().next().map(|r| r.name),
            tc,
            pins: pins_under(&self.iface_pins()),
        }
    }

    /// Program ids on the interface, from the kernel: XDP, then tc.
    fn running(&self) -> (Option<u32>, Vec<u32>) {
        let (xdp, tc): (Vec<_>, Vec<_>) = kstate::running_on(&self.net)
            .into_iter()
            .partition(|r| r.hook.starts_with("xdp"));
        (
            xdp.first().map(|r| r.prog_id),
            tc.iter().map(|r| r.prog_id).collect(),
        )
    }

    /// Every program running on the interface is held by a pin of the root.
    fn check_no_unpinned_program(&self, context: &str) {
        let unpinned = kstate::unpinned_on_interface(&self.root.path, &self.net);
        assert!(
            unpinned.is_empty(),
            "{context}: {unpinned:?} on {}; pins: {:?}",
            self.net.dev,
            pins_under(&self.iface_pins())
        );
    }

    /// Leaves the interface as a fresh one, checking that detach can.
    fn reset(&self, context: &str) {
        self.must(&["detach", "DEV"]);
        let state = self.state();
        assert!(
            state.xdp.is_none() && state.tc.is_empty() && state.pins.is_empty(),
            "{context}: detach left {state:?}"
        );
    }
}

fn pins_under(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.insert(path.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    found
}

/// (syscall, n-th call of it) for every traced call of an uninterrupted run.
fn kill_points(trace: &str) -> Vec<(String, usize)> {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let mut points = Vec::new();
    for line in trace.lines() {
        // "PID name(args) = ret", or "name(args) = ret".
        let call = line
            .split_whitespace()
            .find(|w| w.contains('('))
            .unwrap_or("");
        let Some((name, _)) = call.split_once('(') else {
            continue;
        };
        if !TRACED.split(',').any(|t| t == name) {
            continue;
        }
        let n = counts.entry(name.to_string()).or_default();
        *n += 1;
        points.push((name.to_string(), *n));
    }
    points
}

/// Runs `command` killed at the `n`-th call of `syscall`.
fn kill_at(rig: &Rig, syscall: &str, n: usize, command: &[&str]) {
    let mut strace = vec!["-f".to_string(), "-qq".into()];
    strace.extend(kstate::kill_at_call(syscall, n));
    rig.meshbpf(&strace, command);
}

/// The traced call right after the first one whose strace line contains
/// `needle`, in an uninterrupted run: (syscall, n-th call of it).
fn call_after(rig: &Rig, setup: &[&str], command: &[&str], needle: &str) -> (String, usize) {
    if !setup.is_empty() {
        rig.must(setup);
    }
    let trace = tempfile::NamedTempFile::new().unwrap();
    let traced = rig.meshbpf(
        &[
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            trace.path().display().to_string(),
            "-e".into(),
            format!("trace={TRACED}"),
        ],
        command,
    );
    assert!(traced.status.success(), "{traced:?}");
    rig.reset("after counting");
    let text = fs::read_to_string(trace.path()).unwrap();
    let at = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no call with {needle} in {text}"));
    let points = kill_points(&text.lines().take(at + 2).collect::<Vec<_>>().join("\n"));
    points.last().cloned().expect("a call after it")
}

/// How many bpf calls an uninterrupted run makes.
fn bpf_calls(rig: &Rig, command: &[&str]) -> usize {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let path = trace.path().display().to_string();
    let traced = rig.meshbpf(
        &[
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            path,
            "-e".into(),
            "trace=bpf".into(),
        ],
        command,
    );
    assert!(traced.status.success(), "{traced:?}");
    rig.reset("after counting");
    fs::read_to_string(trace.path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("bpf("))
        .count()
}

fn health_json(rig: &Rig) -> serde_json::Value {
    serde_json::from_slice(&rig.meshbpf(&[], &["health", "-j"]).stdout).unwrap()
}

privileged_test!(
    /// Issue 15, item 1: `filter remove` killed between the link update and
    /// the move of its pin left the kernel running xdp_counter while stats
    /// and filter show reported the filter, health said ok, and --fix
    /// deleted the pins that finishing the swap needed.
    fn an_interrupted_filter_remove_is_named_and_finished() {
        let rig = Rig::new();
        let setup = ["attach", "DEV", "--filter", "rules.json"];
        let remove = ["filter", "remove", "DEV"];
        // The call right after BPF_LINK_UPDATE: the kernel runs the new program.
        let (syscall, n) = call_after(&rig, &setup, &remove, "BPF_LINK_UPDATE");
        rig.must(&setup);
        kill_at(&rig, &syscall, n, &remove);
        assert_eq!(rig.state().xdp.as_deref(), Some("xdp_counter"));

        let stats: serde_json::Value = serde_json::from_str(&rig.must(&["stats", "-j"])).unwrap();
        let stats = &stats[0];
        assert_eq!(stats["program"], "xdp_counter", "{stats:#}");
        assert!(
            stats["interrupted"]
                .as_str()
                .is_some_and(|s| s.contains("interrupted swap of xdp_mesh_filter → xdp_counter")),
            "{stats:#}"
        );
        let show = rig.meshbpf(&[], &["filter", "show", "DEV"]);
        assert!(
            !show.status.success(),
            "filter show reported a filter nothing runs"
        );

        let health = health_json(&rig);
        let named = health["checks"].as_array().unwrap().iter().any(|c| {
            c["status"] == "fail"
                && c["detail"].as_str().is_some_and(|d| {
                    d.contains("interrupted swap of xdp_mesh_filter → xdp_counter")
                })
        });
        assert!(named, "{health:#}");

        rig.must(&["health", "--fix"]);
        let fixed = rig.state();
        assert_eq!(fixed.xdp.as_deref(), Some("xdp_counter"));
        assert!(fixed.pins.contains("xdp_counter/link"), "{fixed:?}");
        assert!(
            !fixed.pins.iter().any(|p| p.starts_with("xdp_mesh_filter")),
            "{fixed:?}"
        );
        rig.check_no_unpinned_program("after --fix");
        // Whichever comes next works on what runs.
        rig.must(&["attach", "DEV", "--filter", "rules.json"]);
        assert_eq!(rig.state().xdp.as_deref(), Some("xdp_mesh_filter"));
        rig.must(&["filter", "remove", "DEV"]);
        rig.reset("at the end");
    }
);

privileged_test!(
    /// Issue 15, item 1 (reverse): `attach --filter` on xdp_counter killed at
    /// the move of the link pin left a filter running that meshbpf could
    /// neither show nor change.
    fn an_interrupted_swap_to_the_filter_can_be_shown_and_finished() {
        let rig = Rig::new();
        let swap = ["attach", "DEV", "--filter", "rules.json"];
        let (syscall, n) = call_after(&rig, &["attach", "DEV"], &swap, "BPF_LINK_UPDATE");
        rig.must(&["attach", "DEV"]);
        kill_at(&rig, &syscall, n, &swap);
        assert_eq!(rig.state().xdp.as_deref(), Some("xdp_mesh_filter"));
        let show: serde_json::Value =
            serde_json::from_str(&rig.must(&["filter", "show", "DEV", "-j"])).unwrap();
        assert_eq!(show["rules"].as_array().map(Vec::len), Some(2), "{show:#}");
        rig.must(&["filter", "apply", "DEV", "rules2.json"]);
        let state = rig.state();
        assert!(state.pins.contains("xdp_mesh_filter/link"), "{state:?}");
        assert!(
            !state.pins.iter().any(|p| p.starts_with("xdp_counter")),
            "{state:?}"
        );
        rig.reset("at the end");
    }
);

privileged_test!(
    /// Issue 15, item 2: a netlink detach killed after the filters and the
    /// qdisc went, with the clsact pin left, could never be cleaned: detach
    /// and --fix failed with EINVAL, and attach claimed the flow table.
    fn a_clsact_pin_without_filters_or_qdisc_is_cleaned() {
        let rig = Rig::new();
        rig.must(&["attach", "DEV", "--tc-method", "netlink"]);
        common::must(&format!(
            "tc -n {} qdisc del dev {} clsact",
            rig.net.ns, rig.net.dev
        ));
        let health = health_json(&rig);
        let named = health["checks"].as_array().unwrap().iter().any(|c| {
            c["status"] == "fail"
                && c["program"] == "tc_classifier"
                && c["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("filter is gone"))
        });
        assert!(named, "{health:#}");
        // attach hooks it again instead of claiming it.
        rig.must(&["attach", "DEV", "--tc-method", "netlink"]);
        assert_eq!(rig.state().tc, ["tc_egress", "tc_ingress"]);
        common::must(&format!(
            "tc -n {} qdisc del dev {} clsact",
            rig.net.ns, rig.net.dev
        ));
        rig.must(&["health", "--fix"]);
        let fixed = rig.state();
        assert!(
            !fixed.pins.iter().any(|p| p.starts_with("tc_classifier")),
            "{fixed:?}"
        );
        rig.must(&["attach", "DEV", "--tc-method", "netlink"]);
        common::must(&format!(
            "tc -n {} qdisc del dev {} clsact",
            rig.net.ns, rig.net.dev
        ));
        rig.reset("detach after the qdisc went");
    }
);

privileged_test!(
    /// Issue 15, item 3: `attach --tc-method netlink` killed after its first
    /// filter was added leaked running filters that detach forgot.
    fn a_killed_netlink_attach_leaves_no_filter_behind() {
        let rig = Rig::new();
        let attach = ["attach", "DEV", "--tc-method", "netlink"];
        // The netlink request after the first filter went in.
        for n in 1..=12 {
            kill_at(&rig, "sendto", n, &attach);
            rig.check_no_unpinned_program(&format!("killed at sendto #{n}"));
            rig.reset(&format!("killed at sendto #{n}"));
        }
    }
);

privileged_test!(
    /// Issue 15, item 10: `attach` killed between its XDP and TC halves left
    /// XDP running without the flow table, with health all ok.
    fn xdp_never_runs_committed_without_its_flow_table() {
        let rig = Rig::new();
        let attach = ["attach", "DEV"];
        // Every bpf call of an uninterrupted run.
        let calls = bpf_calls(&rig, &attach);
        for last in 1..=calls {
            kill_at(&rig, "bpf", last, &attach);
            let state = rig.state();
            let xdp_committed = state.pins.contains("xdp_counter/link");
            let tc_running = state.tc.len() == 2;
            assert!(
                !xdp_committed || tc_running,
                "killed at bpf #{last}: XDP committed without the flow table: {state:?}"
            );
            if state.xdp.is_some() && !tc_running {
                let health = rig.meshbpf(&[], &["health", "--strict", "-j"]);
                assert!(
                    !health.status.success(),
                    "killed at bpf #{last}: health is ok with {state:?}"
                );
            }
            rig.reset(&format!("killed at bpf #{last}"));
        }
    }
);

privileged_test!(
    /// Issue 15, item 12 (part): a clsact filter of another tool at
    /// meshbpf's handle and priority was replaced, then deleted by detach.
    fn a_foreign_filter_at_meshbpfs_handle_is_never_touched() {
        let rig = Rig::new();
        let (_fixture, object) = common::compile_fixture("mark_to_class");
        let tc = |args: &str| common::must(&format!("tc -n {} {args}", rig.net.ns));
        tc(&format!("qdisc add dev {} clsact", rig.net.dev));
        tc(&format!(
            "filter add dev {} ingress pref 65280 handle 0x4d42 bpf obj {} sec classifier da",
            rig.net.dev,
            object.display()
        ));
        let foreign = rig.running().1;
        assert_eq!(foreign.len(), 1);
        let refused = rig.meshbpf(&[], &["attach", "DEV", "--tc-method", "netlink"]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stdout).into_owned()
            + &String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("meshbpf did not attach")
                && said.contains(&format!("program id {}", foreign[0])),
            "{said}"
        );
        assert_eq!(
            rig.running(),
            (None, foreign.clone()),
            "the foreign filter was replaced"
        );
        rig.must(&["detach", "DEV"]);
        assert_eq!(
            rig.running(),
            (None, foreign),
            "detach deleted the foreign filter"
        );
        assert!(rig.state().pins.is_empty());
    }
);
