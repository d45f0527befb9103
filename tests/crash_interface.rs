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
use std::ffi::CString;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
        let (xdp, tc) = self.running();
        State {
            xdp: xdp.map(prog_name),
            tc: {
                let mut names: Vec<String> = tc.iter().map(|&id| prog_name(id)).collect();
                names.sort();
                names
            },
            pins: pins_under(&self.iface_pins()),
        }
    }

    /// Program ids on the interface: XDP, then tcx and clsact, from the kernel.
    fn running(&self) -> (Option<u32>, Vec<u32>) {
        let out = run(Command::new("ip").args([
            "-n",
            &self.net.ns,
            "-j",
            "-d",
            "link",
            "show",
            "dev",
            &self.net.dev,
        ]));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let xdp = links[0]["xdp"]["prog"]["id"].as_u64().map(|id| id as u32);
        let mut tc = self.tcx_ids();
        for hook in ["ingress", "egress"] {
            let out = run(Command::new("tc").args([
                "-n",
                &self.net.ns,
                "-j",
                "filter",
                "show",
                "dev",
                &self.net.dev,
                hook,
            ]));
            let filters: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
            for f in filters.as_array().into_iter().flatten() {
                if let Some(id) = f["options"]["prog"]["id"].as_u64() {
                    tc.push(id as u32);
                }
            }
        }
        (xdp, tc)
    }

    fn tcx_ids(&self) -> Vec<u32> {
        if !common::kernel_has_tcx() {
            return Vec::new();
        }
        VethPair::in_netns(&self.net.ns, || {
            let index = nix::net::if_::if_nametoindex(self.net.dev.as_str()).unwrap();
            let mut ids = Vec::new();
            for attach_type in [libbpf_sys::BPF_TCX_INGRESS, libbpf_sys::BPF_TCX_EGRESS] {
                let mut buf = [0u32; 16];
                // SAFETY: plain data; sz tells libbpf which fields we know.
                let mut opts: libbpf_sys::bpf_prog_query_opts = unsafe { std::mem::zeroed() };
                opts.sz = std::mem::size_of_val(&opts) as _;
                opts.prog_ids = buf.as_mut_ptr();
                opts.__bindgen_anon_1.count = buf.len() as u32;
                // SAFETY: the buffer outlives the call and holds `count` ids.
                let ret = unsafe {
                    libbpf_sys::bpf_prog_query_opts(index as i32, attach_type, &mut opts)
                };
                assert_eq!(ret, 0, "querying tcx programs");
                // SAFETY: the kernel filled in the count member of the union.
                let count = unsafe { opts.__bindgen_anon_1.count } as usize;
                ids.extend_from_slice(&buf[..count.min(buf.len())]);
            }
            ids
        })
    }

    /// Every program running on the interface is held by a pin of the root.
    fn check_no_unpinned_program(&self, context: &str) {
        let pinned = pinned_prog_ids(&self.root.path);
        let (xdp, tc) = self.running();
        for id in xdp.into_iter().chain(tc) {
            assert!(
                pinned.contains(&id),
                "{context}: program {id} ({}) runs on {} but no pin holds it; pins: {:?}",
                prog_name(id),
                self.net.dev,
                pins_under(&self.iface_pins())
            );
        }
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

/// The ids of the programs pinned under `root`, and of those its links run.
fn pinned_prog_ids(root: &Path) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for rel in pins_under(root) {
        let path = root.join(&rel);
        if path.is_dir() {
            continue;
        }
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the call returns a fresh fd or -1.
        let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            continue;
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        use std::os::fd::AsRawFd;
        // SAFETY: plain data the kernel fills in, of the size passed.
        let mut prog: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&prog) as u32;
        if unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut prog, &mut len) } == 0
        {
            ids.insert(prog.id);
            continue;
        }
        // SAFETY: as above.
        let mut link: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&link) as u32;
        if unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut link, &mut len) } == 0
        {
            ids.insert(link.prog_id);
        }
    }
    ids
}

fn prog_name(id: u32) -> String {
    // SAFETY: the call returns a fresh fd or -errno.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return format!("gone:{id}");
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: plain data the kernel fills in, of the size passed.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: as above.
    unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    info.name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect()
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
