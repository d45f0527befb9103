//! `attach --object` on the hooks beside the network: tracepoints, raw
//! tracepoints and tp_btf counting a process's real system calls, cgroup_skb
//! counting what a cgroup's sockets send, and the hooks this kernel refuses.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bpftool_u64_array, compile_fixture, in_private_mounts, named, PinRoot};
use serde_json::Value;

fn attachment<'a>(list: &'a Value, object: &str, program: &str) -> &'a Value {
    &named(&named(list, object)["programs"], program)["attachments"][0]
}

privileged_test!(
    fn tracepoint_raw_tp_and_tp_btf_count_a_processs_system_calls() {
        let (_dir, obj) = compile_fixture("load_trace");
        let root = PinRoot::new();
        let calls = 100;
        // The process is waiting before it makes any call we count; its own
        // start-up calls getppid too, so nothing attaches before it says so.
        let mut child = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\nfor _ in range({calls}): os.getppid()"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let target = format!("target_tgid={}", child.id());
        root.meshbpf(&[
            "load",
            obj.to_str().unwrap(),
            "--name",
            "syscalls",
            "--pin-maps",
            "--set",
            &target,
        ])
        .ok();

        // tracefs is not mounted on a fresh machine: meshbpf mounts it.
        let without_tracefs = |json: &str| {
            in_private_mounts(&format!(
                "while umount /sys/kernel/tracing 2>/dev/null; do :; done; \
                 while umount /sys/kernel/debug/tracing 2>/dev/null; do :; done; \
                 \"$BIN\" attach --object syscalls --prog tp_getppid --bpffs {} {json}",
                root.path.display()
            ))
            .ok()
        };
        let mounted = without_tracefs("");
        assert!(
            mounted
                .stderr
                .contains("mounted tracefs at /sys/kernel/tracing"),
            "{mounted:?}"
        );
        assert!(
            mounted
                .stdout
                .starts_with("attached syscalls:tp_getppid (tp/syscalls/sys_enter_getppid) to sys_enter_getppid as tracepoint"),
            "{mounted:?}"
        );
        let tp = without_tracefs("-j");
        assert!(tp.stderr.is_empty(), "JSON mode keeps notes off: {tp:?}");
        let tp = tp.json();
        assert_eq!(tp["status"], "already_attached");
        assert_eq!(tp["method"], "tracepoint");
        assert_eq!(tp["attach_point"], "sys_enter_getppid");

        for (program, method) in [("raw_getppid", "raw_tp"), ("btf_getppid", "tp_btf")] {
            let attached = root
                .meshbpf(&["attach", "--object", "syscalls", "--prog", program, "-j"])
                .ok()
                .json();
            assert_eq!(attached["method"], method);
            assert_eq!(attached["attach_point"], "sys_enter");
        }

        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success());
        let counts = bpftool_u64_array(&root.loaded().join("syscalls").join("map_calls"));
        assert_eq!(
            counts,
            vec![calls; 3],
            "raw_tp, tp and tp_btf each saw every call"
        );

        let list = root.meshbpf(&["list", "-j"]).ok().json();
        for (program, method) in [
            ("raw_getppid", "raw_tp"),
            ("tp_getppid", "tracepoint"),
            ("btf_getppid", "tp_btf"),
        ] {
            let a = attachment(&list, "syscalls", program);
            assert_eq!(a["method"], method, "{a}");
            assert_eq!(a["state"], "attached", "{a}");
            assert_eq!(
                a["pin_path"],
                root.loaded()
                    .join("syscalls")
                    .join(format!("link_{program}"))
                    .to_str()
                    .unwrap()
            );
        }

        let unloaded = root.meshbpf(&["unload", "syscalls", "-j"]).ok().json();
        let prog_ids: Vec<u64> = unloaded["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["prog_id"].as_u64().unwrap())
            .collect();
        assert_eq!(prog_ids.len(), 3);
        assert!(
            root.loaded_entries().is_empty(),
            "{:?}",
            root.loaded_entries()
        );
        assert!(
            common::wait_for(std::time::Duration::from_secs(5), || {
                prog_ids
                    .iter()
                    .all(|&id| !common::prog_exists(id))
                    .then_some(())
            })
            .is_some(),
            "programs {prog_ids:?} outlived unload"
        );
    }
);

/// The first cgroup v2 mount point.
fn cgroup2() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup created for the test and removed after it.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

privileged_test!(
    fn cgroup_skb_counts_what_a_cgroups_sockets_send() {
        let (_dir, obj) = compile_fixture("load_skb");
        let root = PinRoot::new();
        let cgroup = Cgroup(cgroup2().join(format!("meshbpf-test-{}", std::process::id())));
        std::fs::create_dir(&cgroup.0).unwrap();
        let cg = cgroup.0.to_str().unwrap();
        root.meshbpf(&[
            "load",
            obj.to_str().unwrap(),
            "--name",
            "egress",
            "--pin-maps",
        ])
        .ok();
        let attached = root
            .meshbpf(&[
                "attach",
                cg,
                "--object",
                "egress",
                "--prog",
                "count_egress",
                "-j",
            ])
            .ok()
            .json();
        assert_eq!(attached["method"], "cgroup_skb egress");
        assert_eq!(attached["attach_point"], cg);

        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sink.local_addr().unwrap().port();
        let (datagrams, payload) = (30u64, 200u64);
        let sent = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ > {cg}/cgroup.procs && exec python3 -c \"import socket\n\
                     s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                     for _ in range({datagrams}): s.sendto(b'x' * {payload}, ('127.0.0.1', {port}))\""
                ),
            ])
            .status()
            .unwrap();
        assert!(sent.success());
        let counts = bpftool_u64_array(&root.loaded().join("egress").join("map_sent"));
        // cgroup_skb sees the IP packet: 20 bytes of IPv4 and 8 of UDP header.
        assert_eq!(counts, vec![datagrams, datagrams * (20 + 8 + payload)]);

        let again = root.meshbpf(&[
            "attach",
            cgroup2().to_str().unwrap(),
            "--object",
            "egress",
            "--prog",
            "count_egress",
            "-j",
        ]);
        assert_eq!(again.code, 1, "{again:?}");
        assert!(
            again.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("program 'count_egress' is already attached to cgroup"),
            "{again:?}"
        );

        root.meshbpf(&["unload", "egress"]).ok();
        assert!(root.loaded_entries().is_empty());
        std::fs::remove_dir(&cgroup.0).expect("the cgroup is empty and free");
    }
);

/// Whether this kernel publishes a kprobe PMU (it has none without
/// CONFIG_KPROBES).
fn has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

privileged_test!(
    fn kprobe_attaches_only_where_the_kernel_has_kprobes() {
        let (_dir, obj) = compile_fixture("load_kprobe");
        let root = PinRoot::new();
        root.meshbpf(&["load", obj.to_str().unwrap(), "--name", "kp"])
            .ok();
        let r = root.meshbpf(&["attach", "--object", "kp", "-j"]);
        let link = root.loaded().join("kp").join("link_on_unlinkat");
        if has_kprobes() {
            assert_eq!(r.code, 0, "{r:?}");
            assert_eq!(r.json()["method"], "kprobe");
            assert!(link.exists());
        } else {
            assert_eq!(r.code, 1, "{r:?}");
            let e = r.json();
            assert_eq!(
                e["error"],
                "this kernel cannot attach kprobes: it has no kprobe PMU at /sys/bus/event_source/devices/kprobe \
    (kernels built without CONFIG_KPROBES have none): No such file or directory (os error 2)"
            );
            assert!(e["hint"].as_str().unwrap().contains("raw_tp"), "{e}");
            assert!(!link.exists(), "a refused attach pins nothing");
        }
        root.meshbpf(&["unload", "kp"]).ok();
    }
);

privileged_test!(
    fn fentry_is_refused_at_load_where_the_kernel_refuses_trampolines() {
        let (_dir, obj) = compile_fixture("load_fentry");
        let root = PinRoot::new();
        let r = root.meshbpf(&["load", obj.to_str().unwrap(), "--name", "fe", "-j"]);
        if r.code == 0 {
            // A kernel with trampolines: the program attaches too.
            root.meshbpf(&["attach", "--object", "fe"]).ok();
            return;
        }
        assert_eq!(r.code, 1, "{r:?}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with(&format!(
                "the kernel refused to load program 'enter_unlinkat' (fentry/do_unlinkat) of {}: \
    BPF_PROG_LOAD failed with EPERM before the verifier ran",
                obj.display()
            )),
            "{error}"
        );
        assert!(
            error.ends_with("Operation not permitted (os error 1)"),
            "{error}"
        );
        assert!(
            root.loaded_entries().is_empty(),
            "{:?}",
            root.loaded_entries()
        );
    }
);
