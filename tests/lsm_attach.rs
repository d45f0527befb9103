//! lsm_monitor's runtime on the host kernel, which refuses BPF LSM programs
//! (EPERM): `attach --lsm` falls back to tracepoints and says why, `stats`
//! and `health` show it, `detach --lsm` releases every link, a failed
//! attach leaves nothing behind; with a policy, opens under a watched
//! directory of the test's own are counted exactly, policies are replaced
//! atomically by `attach --lsm --policy` and `lsm apply`, and enforce mode
//! is refused with the kernel's reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{link_exists, prog_exists, PinRoot};
use serde_json::{json, Value};

fn lsm_dir(root: &PinRoot) -> PathBuf {
    root.path.join("host/lsm_monitor")
}

/// The tests of this file run one at a time: some count lsm_monitor's
/// programs in the kernel, one counts host-wide ptrace and module calls.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ids(report: &Value, key: &str) -> Vec<u64> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect()
}

/// The `lsm_monitor` check of `health -j`, if there is one.
fn health_check(root: &PinRoot) -> Option<Value> {
    let report = root.meshbpf(&["health", "-j"]).ok().json();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lsm_monitor")
        .cloned()
}

privileged_test!(
    fn attach_falls_back_to_tracepoints_with_the_kernels_reason() {
        let _serial = serial();
        let root = PinRoot::new();
        let attached = root.meshbpf(&["attach", "--lsm", "-j"]).ok().json();
        assert_eq!(attached["program"], "lsm_monitor");
        assert_eq!(attached["status"], "attached");
        assert_eq!(attached["mode"], "audit");
        assert_eq!(attached["method"], "tracepoint");
        assert_eq!(
            attached["fallback_reason"],
            "the kernel refused to load BPF LSM program 'lsm_open': EPERM (Operation not permitted)"
        );
        assert_eq!(attached["pin_path"], lsm_dir(&root).to_str().unwrap());
        assert_eq!(attached["policy"]["generation"], 1);
        assert_eq!(attached["policy"]["watched_prefixes"], 0);
        let progs = ids(&attached, "prog_ids");
        let links = ids(&attached, "link_ids");
        assert_eq!((progs.len(), links.len()), (3, 3));
        assert!(progs.iter().all(|&p| prog_exists(p)));
        assert!(links.iter().all(|&l| link_exists(l)));
        let mut pins: Vec<String> = std::fs::read_dir(lsm_dir(&root))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pins.sort();
        assert_eq!(
            pins,
            [
                "active",
                "allow_cgroups",
                "allow_comms",
                "allow_uids",
                "config",
                "counters",
                "events",
                "link",
                "link_tp_exec",
                "link_tp_sys_enter",
                "link_tp_sys_exit",
                "paths",
                "policy",
                "prog_tp_exec",
                "prog_tp_sys_enter",
                "prog_tp_sys_exit"
            ]
        );

        let stats = root.lsm_stats();
        assert_eq!(stats["method"], "tracepoint");
        assert_eq!(stats["mode"], "audit");
        assert_eq!(stats["link_ids"], attached["link_ids"]);
        assert_eq!(stats["lost_total"], 0);
        assert!(stats.get("fallback_reason").is_none(), "{stats}");
        let table = root.meshbpf(&["stats"]).ok().stdout;
        assert!(
            table.contains("host · lsm_monitor · tracepoint · audit mode · since "),
            "{table}"
        );
        let check = health_check(&root).expect("a lsm_monitor check");
        assert_eq!(check["status"], "ok", "{check}");
        assert!(
            check["detail"]
                .as_str()
                .unwrap()
                .starts_with("audit mode with tracepoint (links "),
            "{check}"
        );

        let again = root.meshbpf(&["attach", "--lsm", "-j"]).ok().json();
        assert_eq!(again["status"], "already_attached");
        assert_eq!(again["link_ids"], attached["link_ids"]);
        assert!(again.get("fallback_reason").is_none(), "{again}");

        let detached = root.meshbpf(&["detach", "--lsm", "-j"]).ok().json();
        assert_eq!(detached["program"], "lsm_monitor");
        assert_eq!(detached["status"], "detached");
        assert_eq!(detached["link_ids"], attached["link_ids"]);
        assert!(!root.path.join("host").exists());
        for link in links {
            assert!(!link_exists(link), "link {link} still exists");
        }
        let nothing = root.meshbpf(&["detach", "--lsm", "-j"]).ok().json();
        assert_eq!(nothing["status"], "not_attached");
        assert!(health_check(&root).is_none());
    }
);

/// ptrace(PTRACE_ATTACH) on a pid that does not exist and finit_module on
/// fd -1: both fail, and both are seen at syscall entry by the fallback.
fn ptrace_and_module_calls(times: u32) {
    #[cfg(target_arch = "x86_64")]
    let (ptrace, finit_module) = (101, 313);
    #[cfg(target_arch = "aarch64")]
    let (ptrace, finit_module) = (117, 273);
    let script = [
        "import ctypes".to_string(),
        "libc = ctypes.CDLL(None, use_errno=True)".to_string(),
        format!("for _ in range({times}):"),
        format!("    assert libc.syscall({ptrace}, 16, 0x7ffffffe, 0, 0) == -1"),
        format!("    assert libc.syscall({finit_module}, -1, b'', 0) == -1"),
    ]
    .join("\n");
    let out = common::run(Command::new("/usr/bin/python3").args(["-c", &script]));
    assert!(out.status.success(), "{out:?}");
}

privileged_test!(
    fn counters_count_each_ptrace_and_module_call_and_no_unwatched_open() {
        let _serial = serial();
        let root = PinRoot::new();
        root.meshbpf(&["attach", "--lsm", "-j"]).ok();
        let before = root.lsm_stats();
        ptrace_and_module_calls(25);
        std::fs::read_to_string("/etc/hostname").unwrap();
        let after = root.lsm_stats();
        let grew = |kind: &str, counter: &str| {
            after["events"][kind][counter].as_u64().unwrap()
                - before["events"][kind][counter].as_u64().unwrap()
        };
        assert_eq!(grew("ptrace", "events"), 25, "{before}\n{after}");
        assert_eq!(grew("module", "events"), 25, "{before}\n{after}");
        assert_eq!(after["events"]["open"]["events"], 0, "nothing is watched");
        assert_eq!(after["events"]["capable"]["events"], 0, "LSM only");
        for kind in ["ptrace", "module"] {
            let c = &after["events"][kind];
            assert_eq!(
                c["delivered"].as_u64().unwrap() + c["lost"].as_u64().unwrap(),
                c["events"].as_u64().unwrap()
            );
            assert_eq!(c["denied"], 0, "the fallback never denies");
            assert_eq!(c["audited"], 0, "nothing is denied by an empty policy");
        }
    }
);

/// A small map of bpftool's (not meshbpf's), pinned at `path`.
fn pin_a_map(path: &Path) {
    let made = common::run(
        Command::new("bpftool")
            .args(["map", "create"])
            .arg(path)
            .args([
                "type",
                "array",
                "key",
                "4",
                "value",
                "4",
                "entries",
                "1",
                "name",
                "not_meshbpfs",
            ]),
    );
    assert!(made.status.success(), "{made:?}");
}

/// How many programs of this name the kernel has.
fn programs_named(name: &str) -> usize {
    let out = common::run(Command::new("bpftool").args(["-j", "prog", "list"]));
    let progs: Value = serde_json::from_slice(&out.stdout).unwrap();
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == name)
        .count()
}

privileged_test!(
    fn a_failed_attach_leaves_no_pins_and_nothing_hooked() {
        let _serial = serial();
        let root = PinRoot::new();
        std::fs::create_dir_all(&root.path).unwrap();
        // A pinned map where the host/ directory belongs: everything loads and
        // hooks, then pinning fails.
        let host = root.path.join("host");
        pin_a_map(&host);
        let before = programs_named("tp_sys_enter");
        let ran = root.meshbpf(&["attach", "--lsm", "-j"]);
        assert_eq!(ran.code, 1, "{ran:?}");
        let error = ran.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with(&format!("creating {}/lsm_monitor: ", host.display())),
            "{error}"
        );
        let released = common::wait_for(Duration::from_secs(5), || {
            // <=: a program of an earlier test may still be on its way out.
            (programs_named("tp_sys_enter") <= before).then_some(())
        });
        assert!(released.is_some(), "the failed attach left its programs");
        std::fs::remove_file(&host).unwrap();

        let elsewhere = common::meshbpf(&["attach", "--lsm", "--bpffs", "/tmp/not-a-bpffs", "-j"]);
        assert_eq!(elsewhere.code, 1);
        assert_eq!(
            elsewhere.json()["error"],
            "pin root /tmp/not-a-bpffs is not on a bpffs, so pins cannot be created there"
        );
        assert!(!std::path::Path::new("/tmp/not-a-bpffs").exists());
    }
);

privileged_test!(
    fn pins_of_an_interrupted_attach_are_reported_then_swept() {
        let _serial = serial();
        let root = PinRoot::new();
        // What an attach killed before its commit pin leaves: pins, no link.
        std::fs::create_dir_all(lsm_dir(&root)).unwrap();
        pin_a_map(&lsm_dir(&root).join("events"));
        let check = health_check(&root).expect("a lsm_monitor check");
        assert_eq!(check["status"], "fail", "{check}");
        assert_eq!(
            check["detail"],
            format!(
                "interrupted attach of lsm_monitor at {}: no link pinned, nothing runs",
                lsm_dir(&root).display()
            )
        );
        let attached = root.meshbpf(&["attach", "--lsm", "-j"]).ok().json();
        assert_eq!(attached["status"], "attached");
        assert_eq!(health_check(&root).unwrap()["status"], "ok");
    }
);

fn write_policy(dir: &Path, name: &str, policy: Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, policy.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn opens(root: &PinRoot) -> (u64, u64, u64) {
    let open = &root.lsm_stats()["events"]["open"];
    let n = |k: &str| open[k].as_u64().unwrap();
    (n("events"), n("audited"), n("denied"))
}

/// Creates (opens for writing) `count` files in `dir`.
fn create_files(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
}

/// A directory of the test's own, as the kernel names it.
fn own_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

privileged_test!(
    fn opens_under_a_watched_directory_are_counted_exactly() {
        let _serial = serial();
        let root = PinRoot::new();
        let (_dir, watched) = own_dir();
        let locked = watched.join("locked");
        let policy = write_policy(
            &watched,
            "policy.json",
            json!({"watch": [watched], "deny": {"write": [locked]}}),
        );
        let attached = root
            .meshbpf(&["attach", "--lsm", "--policy", &policy, "-j"])
            .ok()
            .json();
        assert_eq!(attached["status"], "attached");
        assert_eq!(attached["mode"], "audit");
        assert_eq!(attached["policy"]["watched_prefixes"], 1);
        assert_eq!(attached["policy"]["deny_write_prefixes"], 1);
        // Reading the policy file back was an open under the watched
        // directory too, by meshbpf before it attached: not counted.
        assert_eq!(opens(&root), (0, 0, 0));
        create_files(&watched, 10);
        create_files(&locked, 5);
        std::fs::read_to_string(watched.join("f0")).unwrap();
        // Outside the watched directory: not reported.
        std::fs::read_to_string("/etc/hostname").unwrap();
        assert_eq!(
            opens(&root),
            (16, 5, 0),
            "10 creations and a read, 5 creations the policy would deny: audited"
        );
    }
);

privileged_test!(
    fn policies_are_replaced_atomically_and_keep_the_mode() {
        let _serial = serial();
        let root = PinRoot::new();
        let (_first_dir, first) = own_dir();
        let (_second_dir, second) = own_dir();
        let watch_first = write_policy(&first, "p.json", json!({"watch": [first]}));
        let watch_second = write_policy(&second, "p.json", json!({"watch": [second]}));

        let attached = root.meshbpf(&["attach", "--lsm", "-j"]).ok().json();
        assert_eq!(attached["policy"]["generation"], 1);
        create_files(&first, 2);
        assert_eq!(opens(&root).0, 0, "nothing is watched without a policy");

        let replaced = root
            .meshbpf(&["attach", "--lsm", "--policy", &watch_first, "-j"])
            .ok()
            .json();
        assert_eq!(replaced["status"], "policy_replaced");
        assert_eq!(replaced["link_ids"], attached["link_ids"]);
        assert_eq!(replaced["policy"]["generation"], 0);
        assert_eq!(replaced["policy"]["watched_prefixes"], 1);
        create_files(&first, 3);
        assert_eq!(opens(&root).0, 3);

        let applied = root
            .meshbpf(&["lsm", "apply", &watch_second, "-j"])
            .ok()
            .json();
        assert_eq!(
            (
                &applied["program"],
                &applied["status"],
                &applied["mode"],
                &applied["generation"]
            ),
            (
                &json!("lsm_monitor"),
                &json!("policy_replaced"),
                &json!("audit"),
                &json!(1)
            )
        );
        create_files(&first, 3);
        create_files(&second, 2);
        assert_eq!(
            opens(&root).0,
            5,
            "only the second directory is watched now"
        );

        let enforce = root.meshbpf(&["lsm", "apply", &watch_first, "--enforce", "-j"]);
        assert_eq!(enforce.code, 1, "{enforce:?}");
        assert_eq!(
            enforce.json()["error"],
            "--enforce: the attached lsm_monitor runs the tracepoint fallback, which cannot deny \
    (the kernel refused to load BPF LSM program 'lsm_open': EPERM (Operation not permitted))"
        );
        let stats = root.lsm_stats();
        assert_eq!(
            stats["policy"]["generation"], 1,
            "the refused apply changed nothing"
        );
        assert_eq!(stats["mode"], "audit");
    }
);

privileged_test!(
    fn enforce_is_refused_with_the_kernels_reason_and_attaches_nothing() {
        let _serial = serial();
        let root = PinRoot::new();
        let (_dir, dir) = own_dir();
        let policy = write_policy(
            &dir,
            "p.json",
            json!({"deny": {"write": [dir.join("locked")]}}),
        );
        let before = programs_named("tp_sys_enter");
        let ran = root.meshbpf(&["attach", "--lsm", "--policy", &policy, "--enforce", "-j"]);
        assert_eq!(ran.code, 1, "{ran:?}");
        let err = ran.json();
        assert_eq!(
            err["error"],
            "--enforce needs BPF LSM programs, and the kernel refused to load BPF LSM program \
    'lsm_open': EPERM (Operation not permitted)"
        );
        assert_eq!(
            err["hint"],
            "attach without --enforce: the tracepoint fallback audits (reports what the policy would deny) but cannot deny"
        );
        assert!(!root.path.join("host").exists());
        // A program of an earlier test may still be on its way out.
        let none_added = common::wait_for(Duration::from_secs(5), || {
            (programs_named("tp_sys_enter") <= before).then_some(())
        });
        assert!(none_added.is_some(), "the refused attach left programs");
    }
);

privileged_test!(
    fn apply_without_an_attachment_says_how_to_attach() {
        let root = PinRoot::new();
        let (_dir, dir) = own_dir();
        let policy = write_policy(&dir, "p.json", json!({}));
        let ran = root.meshbpf(&["lsm", "apply", &policy, "-j"]);
        assert_eq!(ran.code, 1, "{ran:?}");
        let err = ran.json();
        assert_eq!(
            err["error"],
            format!(
                "lsm_monitor is not attached: no lsm_monitor attachment under {}",
                root.path.display()
            )
        );
        assert_eq!(
            err["hint"],
            "meshbpf attach --lsm --policy POLICY.json attaches it with a policy"
        );
    }
);
