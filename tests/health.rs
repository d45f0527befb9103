//! `meshbpf health` against the running kernel: this kernel's real hook
//! answers, missing mounts reported and repaired in a private mount
//! namespace, orphaned attachments found and removed, tables and drop rates
//! flagged. Every test has a pin root of its own, so `--fix` can never touch
//! another test's state.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{in_private_mounts, Ran, VethPair, ADDR, UNMOUNT_BPFFS};
use serde_json::{json, Value};

/// A pin root of the test's own, removed with everything in it at the end.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Root(PathBuf::from(format!(
            "/sys/fs/bpf/mbhealth{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `setup`, then each command, in one private mount namespace; what
/// each command printed and how it ended.
fn in_one_namespace(setup: &str, commands: &[String]) -> Vec<Ran> {
    let out = tempfile::tempdir().unwrap();
    let file = |i: usize, ext: &str| out.path().join(format!("{i}.{ext}"));
    let mut script = format!("{setup}\n");
    for (i, command) in commands.iter().enumerate() {
        script.push_str(&format!(
            "if {command} > {} 2> {}; then echo 0 > {code}; else echo $? > {code}; fi\n",
            file(i, "out").display(),
            file(i, "err").display(),
            code = file(i, "code").display()
        ));
    }
    in_private_mounts(&script).ok();
    (0..commands.len())
        .map(|i| {
            let read = |ext| fs::read_to_string(file(i, ext)).unwrap();
            Ran {
                code: read("code").trim().parse().unwrap(),
                stdout: read("out"),
                stderr: read("err"),
            }
        })
        .collect()
}

fn health(root: &Root, flags: &str) -> String {
    format!("\"$BIN\" health {flags} --bpffs {}", root.arg())
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn state_checks<'a>(report: &'a Value, interface: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["interface"] == interface)
        .collect()
}

fn state_check<'a>(report: &'a Value, name: &str, interface: &str, program: &str) -> &'a Value {
    state_checks(report, interface)
        .into_iter()
        .find(|c| c["name"] == name && c["program"] == program)
        .unwrap_or_else(|| panic!("no {name} check for {interface}/{program} in {report}"))
}

/// A hook the kernel refused: where, with which errno, and why.
fn assert_refused(hooks: &Value, name: &str, stage: &str, errno: Option<&str>, reason: &str) {
    let hook = &hooks[name];
    assert_eq!(hook["available"], false, "{name}: {hook}");
    assert_eq!(hook["stage"], stage, "{name}: {hook}");
    assert_eq!(
        hook["errno"],
        errno.map_or(Value::Null, Value::from),
        "{name}: {hook}"
    );
    assert!(
        hook["detail"].as_str().unwrap().contains(reason),
        "{name}: {hook}"
    );
}

fn host_fs_type(path: &str) -> String {
    String::from_utf8(common::sh(&format!("stat -f -c %T {path}")).stdout).unwrap()
}

privileged_test!(
    fn hook_probes_give_this_kernels_answers() {
        let root = Root::new();
        let mut runs = in_one_namespace(
            "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing",
            &[health(&root, "-j")],
        );
        let report = runs.remove(0).ok().json();
        let hooks = &report["hooks"];
        assert_eq!(hooks.as_object().unwrap().len(), 12, "{hooks}");
        for available in [
            "xdp",
            "tc",
            "tcx",
            "tracepoint",
            "raw_tp",
            "tp_btf",
            "cgroup_skb",
            "ringbuf",
            "lpm_trie",
        ] {
            assert_eq!(hooks[available]["available"], true, "{available}: {hooks}");
            assert_eq!(hooks[available]["errno"], Value::Null, "{available}");
        }
        assert!(
            hooks["tracepoint"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("loaded and attached to sched:sched_switch"),
            "{hooks}"
        );

        // kprobe programs load; there is nothing to attach them with.
        assert_refused(hooks, "kprobe", "attach", Some("ENOENT"), "CONFIG_KPROBES");
        for trampoline in ["fentry", "lsm"] {
            assert_refused(hooks, trampoline, "load", Some("EPERM"), "BPF trampoline");
        }
        assert_eq!(
            hooks["fentry"]["fallback"],
            "syscall tracepoints only: no per-function latency"
        );
        assert_eq!(
            hooks["lsm"]["fallback"],
            "lsm_monitor's tracepoint method: exec, opens, ptrace and module loads, audit only"
        );
        assert!(hooks["lsm"]["disables"]
            .as_str()
            .unwrap()
            .contains("lsm_monitor"));
        // Nothing fails here; the refused hooks degrade.
        assert_eq!(report["status"], "degraded", "{report}");
        assert_eq!(check(&report, "bpf_lsm")["status"], "ok");
        assert_eq!(
            check(&report, "lockdown")["detail"]
                .as_str()
                .unwrap()
                .split(':')
                .next(),
            Some("integrity")
        );
    }
);

privileged_test!(
    fn missing_tracefs_is_a_warning_that_fix_mounts() {
        let host_before = host_fs_type("/sys/kernel/tracing");
        let root = Root::new();
        let runs = in_one_namespace(
            "while umount /sys/kernel/tracing 2>/dev/null; do :; done
         while umount /sys/kernel/debug 2>/dev/null; do :; done",
            &[
                health(&root, "-j"),
                health(&root, "--strict -j"),
                health(&root, "--fix -j"),
                "stat -f -c %T /sys/kernel/tracing".into(),
            ],
        );
        let before = runs[0].json();
        assert_eq!(runs[0].code, 0);
        let tracefs = check(&before, "tracefs");
        assert_eq!(tracefs["status"], "warn", "{tracefs}");
        assert!(tracefs["hint"].as_str().unwrap().contains("--fix"));
        let tracepoint = &before["hooks"]["tracepoint"];
        assert_refused(
            &before["hooks"],
            "tracepoint",
            "attach",
            None,
            "tracefs is not mounted at /sys/kernel/tracing",
        );
        assert_eq!(
            tracepoint["fallback"],
            "raw_tp on raw_syscalls, which needs no tracefs"
        );
        assert_eq!(before["status"], "degraded");
        assert_eq!(runs[1].code, 0, "a warning passes --strict: {:?}", runs[1]);

        let fixed = runs[2].json();
        assert_eq!(runs[2].code, 0);
        assert_eq!(
            fixed["fixes"],
            json!([{"action": "mount_tracefs", "done": true, "detail": "mounted tracefs at /sys/kernel/tracing"}])
        );
        assert_eq!(check(&fixed, "tracefs")["status"], "ok");
        assert_eq!(fixed["hooks"]["tracepoint"]["available"], true);
        assert_eq!(runs[3].stdout.trim(), "tracefs");
        assert_eq!(host_fs_type("/sys/kernel/tracing"), host_before);
    }
);

privileged_test!(
    fn missing_bpffs_fails_strict_until_fix_mounts_it() {
        let root = Root::new();
        let runs = in_one_namespace(
            UNMOUNT_BPFFS,
            &[
                health(&root, "-j"),
                health(&root, "--strict -j"),
                health(&root, "--strict"),
                health(&root, "--strict --fix -j"),
                "stat -f -c %T /sys/fs/bpf".into(),
            ],
        );
        let report = runs[0].json();
        assert_eq!(
            runs[0].code, 0,
            "without --strict, health reports and succeeds"
        );
        assert_eq!(report["status"], "fail");
        let bpffs = check(&report, "bpffs");
        assert_eq!(bpffs["status"], "fail");
        assert_eq!(
            bpffs["detail"],
            format!(
                "{} is not on a bpffs: meshbpf cannot pin attachments there",
                root.arg()
            )
        );
        assert!(bpffs["hint"].as_str().unwrap().contains("--fix"), "{bpffs}");

        assert_eq!(runs[1].code, 1, "{:?}", runs[1]);
        assert_eq!(
            runs[1].json()["status"],
            "fail",
            "the report is still printed"
        );
        assert!(runs[1].stderr.is_empty(), "{:?}", runs[1]);
        assert_eq!(runs[2].code, 1);
        assert!(
            runs[2].stdout.starts_with("meshbpf health: fail")
                && runs[2]
                    .stdout
                    .contains("hint (bpffs): meshbpf health --fix mounts one"),
            "{:?}",
            runs[2]
        );

        assert_eq!(runs[3].code, 0, "repaired: {:?}", runs[3]);
        let fixed = runs[3].json();
        let fixes = fixed["fixes"].as_array().unwrap();
        assert!(
            fixes.contains(&json!({"action": "mount_bpffs", "done": true, "detail": "mounted bpffs at /sys/fs/bpf"})),
            "{fixed}"
        );
        assert_eq!(check(&fixed, "bpffs")["status"], "ok");
        assert_ne!(fixed["status"], "fail");
        assert_eq!(runs[4].stdout.trim(), "bpf_fs");
        assert_eq!(host_fs_type("/sys/fs/bpf").trim(), "bpf_fs");
    }
);

privileged_test!(
    fn fix_removes_orphaned_attachments_and_nothing_else() {
        let root = Root::new();
        let (tcx, clsact, live) = (VethPair::new(), VethPair::new(), VethPair::new());
        tcx.meshbpf(&["attach", &tcx.dev, "--bpffs", root.arg()])
            .ok();
        clsact
            .meshbpf(&[
                "attach",
                &clsact.dev,
                "--tc-method",
                "netlink",
                "--bpffs",
                root.arg(),
            ])
            .ok();
        let kept = live
            .meshbpf(&["attach", &live.dev, "--bpffs", root.arg(), "-j"])
            .ok()
            .json();
        // What a command killed before it pinned its link leaves behind.
        let leftover = root.0.join("net/ghost0/xdp_counter");
        fs::create_dir_all(&leftover).unwrap();
        for net in [&tcx, &clsact] {
            common::must(&format!("ip -n {} link del {}", net.ns, net.dev));
        }

        let report = common::meshbpf(&["health", "-j", "--bpffs", root.arg()])
            .ok()
            .json();
        assert_eq!(report["status"], "fail");
        for (net, program) in [
            (&tcx, "xdp_counter"),
            (&tcx, "tc_classifier"),
            (&clsact, "xdp_counter"),
            (&clsact, "tc_classifier"),
        ] {
            let c = state_check(&report, "attachment", &net.dev, program);
            assert_eq!(c["status"], "fail", "{c}");
            assert!(
                c["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("orphaned pins at "),
                "{c}"
            );
        }
        assert!(state_check(&report, "attachment", &clsact.dev, "tc_classifier")["detail"]
            .as_str()
            .unwrap()
            .ends_with("the link of xdp_counter on the same interface is defunct: the interface was deleted"));
        let ghost = state_check(&report, "attachment", "ghost0", "xdp_counter");
        assert!(
            ghost["detail"]
                .as_str()
                .unwrap()
                .ends_with("no link pin: a command was interrupted before it committed"),
            "{ghost}"
        );
        // Seen from the host, the live one runs in another namespace: not orphaned.
        for program in ["xdp_counter", "tc_classifier"] {
            let c = state_check(&report, "attachment", &live.dev, program);
            assert_eq!(c["status"], "ok", "{c}");
        }
        let human = common::meshbpf(&["health", "--bpffs", root.arg()]).ok();
        assert!(
            human
                .stdout
                .contains(&format!("attachment {}/xdp_counter", tcx.dev))
                && human.stdout.contains("meshbpf health --fix removes them"),
            "{human:?}"
        );
        assert_eq!(
            common::meshbpf(&["health", "--strict", "-j", "--bpffs", root.arg()]).code,
            1
        );

        let fixed = common::meshbpf(&["health", "--fix", "--strict", "-j", "--bpffs", root.arg()])
            .ok()
            .json();
        let removed: Vec<&Value> = fixed["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["action"] == "remove_orphan")
            .collect();
        assert_eq!(removed.len(), 5, "{fixed}");
        assert!(removed.iter().all(|f| f["done"] == true), "{fixed}");
        for gone in [&tcx.dev, &clsact.dev, &"ghost0".to_string()] {
            assert!(!root.0.join("net").join(gone).exists(), "{gone} left pins");
            assert!(state_checks(&fixed, gone).is_empty(), "{fixed}");
        }
        assert!(Path::new(&kept["pin_path"].as_str().unwrap())
            .join("link")
            .exists());
        assert_eq!(
            live.xdp_prog_id(),
            kept["prog_id"].as_u64(),
            "still attached"
        );
        assert_eq!(live.tc_program_count(), 2, "tc_classifier still attached");
        assert_eq!(
            state_check(&fixed, "attachment", &live.dev, "xdp_counter")["status"],
            "ok"
        );
        assert_ne!(fixed["status"], "fail", "{fixed}");

        live.meshbpf(&["detach", &live.dev, "--bpffs", root.arg()])
            .ok();
    }
);

/// Sends one datagram to `port` from each of `sources` fresh sockets: as
/// many flows as sources.
fn datagrams_from_new_ports(net: &VethPair, sources: usize, port: u16) {
    VethPair::in_netns(&net.peer_ns, || {
        for _ in 0..sources {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.send_to(&[0x5a; 32], (ADDR, port)).unwrap();
        }
    });
}

privileged_test!(
    fn a_full_flow_table_and_a_filter_that_drops_most_are_flagged() {
        let root = Root::new();
        let net = VethPair::new();
        let rules = tempfile::tempdir().unwrap();
        let rules_path = rules.path().join("rules.json");
        fs::write(
            &rules_path,
            json!({"default": "allow", "rules": [{"action": "deny", "protocol": "udp", "dport": 9}]})
                .to_string(),
        )
        .unwrap();
        net.meshbpf(&[
            "attach",
            &net.dev,
            "--filter",
            rules_path.to_str().unwrap(),
            "--max-flows",
            "64",
            "--bpffs",
            root.arg(),
        ])
        .ok();
        let (passed, dropped) = (200, 300);
        datagrams_from_new_ports(&net, passed, 10);
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), dropped, 32);
        let judged = common::wait_for(std::time::Duration::from_secs(5), || {
            let report = net
                .meshbpf(&["health", "-j", "--bpffs", root.arg()])
                .ok()
                .json();
            let rate = state_check(&report, "drop_rate", &net.dev, "xdp_mesh_filter");
            rate["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("dropped {dropped} of {}", passed + dropped))
                .then_some(report)
        })
        .expect("every datagram was judged");

        let rate = state_check(&judged, "drop_rate", &net.dev, "xdp_mesh_filter");
        assert_eq!(rate["status"], "warn");
        assert_eq!(
            rate["detail"],
            "dropped 300 of 500 packets (60.0%) since attach, more than 50%"
        );
        let flows = state_check(&judged, "flow_table", &net.dev, "tc_classifier");
        assert_eq!(flows["status"], "warn", "{flows}");
        assert!(
            flows["detail"]
                .as_str()
                .unwrap()
                .ends_with("flows evicted since attach: the table has been full"),
            "{flows}"
        );
        assert_eq!(
            state_check(&judged, "filter_rules", &net.dev, "xdp_mesh_filter")["detail"],
            "1 of 16384 rules (0%)"
        );
        assert_eq!(
            state_check(&judged, "limiter_table", &net.dev, "xdp_mesh_filter")["status"],
            "ok"
        );
        assert_eq!(
            state_check(&judged, "attachment", &net.dev, "xdp_mesh_filter")["status"],
            "ok"
        );
        assert_eq!(judged["status"], "degraded");

        let tolerant = net
            .meshbpf(&[
                "health",
                "-j",
                "--max-drop-percent",
                "60",
                "--bpffs",
                root.arg(),
            ])
            .ok()
            .json();
        assert_eq!(
            state_check(&tolerant, "drop_rate", &net.dev, "xdp_mesh_filter")["status"],
            "ok"
        );
        net.meshbpf(&["detach", &net.dev, "--bpffs", root.arg()])
            .ok();
    }
);

privileged_test!(
    fn without_privileges_health_names_what_is_missing() {
        let root = Root::new();
        let ran = common::as_nobody(&["health", "-j", "--bpffs", root.arg()]);
        assert_eq!(ran.code, 0, "{ran:?}");
        let report = ran.json();
        assert_eq!(report["status"], "fail");
        for (cap, status) in [
            ("cap_bpf", "fail"),
            ("cap_perfmon", "warn"),
            ("cap_net_admin", "fail"),
            ("cap_sys_admin", "fail"),
        ] {
            let c = check(&report, cap);
            assert_eq!(c["status"], status, "{c}");
            assert!(
                c["hint"]
                    .as_str()
                    .unwrap()
                    .starts_with("run meshbpf as root"),
                "{c}"
            );
        }
        assert_refused(
            &report["hooks"],
            "xdp",
            "setup",
            Some("EPERM"),
            "throwaway network namespace",
        );
        let lpm = &report["hooks"]["lpm_trie"];
        assert_eq!(
            lpm["detail"],
            "BPF_MAP_CREATE failed with EPERM (Operation not permitted): this needs capabilities this process lacks: CAP_BPF (to load programs and read maps)"
        );
        assert_eq!(
            common::as_nobody(&["health", "--strict", "--bpffs", root.arg()]).code,
            1
        );
    }
);

privileged_test!(
    /// An attach killed right after creating `net/IF/` (crash test
    /// attach_filter_fresh, mkdir:4) left an empty directory that health
    /// called all ok and --fix kept.
    fn an_empty_interface_directory_is_named_and_removed() {
        let root = Root::new();
        let empty = root.0.join("net/ghost1");
        fs::create_dir_all(&empty).unwrap();
        let report = common::meshbpf(&["health", "-j", "--bpffs", root.arg()])
            .ok()
            .json();
        let c = state_check(&report, "attachment", "ghost1", "");
        assert_eq!(c["status"], "warn", "{c}");
        assert_eq!(
            c["detail"],
            format!(
                "empty directory {}: an attach or detach of ghost1 was interrupted before it held any pins",
                empty.display()
            )
        );
        let fixed = common::meshbpf(&["health", "--fix", "-j", "--bpffs", root.arg()])
            .ok()
            .json();
        assert!(
            fixed["fixes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["action"] == "remove_orphan" && f["done"] == true),
            "{fixed}"
        );
        assert!(!empty.exists());
        assert!(state_checks(&fixed, "ghost1").is_empty(), "{fixed}");
    }
);
