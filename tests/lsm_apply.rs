//! lsm_monitor with a policy on the host kernel (the tracepoint fallback):
//! opens under a watched directory of the test's own are counted exactly,
//! a policy is replaced atomically by `attach --lsm --policy` and
//! `lsm apply`, and enforce mode is refused with the kernel's reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::PinRoot;
use serde_json::{json, Value};

/// The policy parser arrives with the policy branch (`lsm check` with it);
/// on the runtime branch alone the policy API is a stub.
fn policy_parser_exists() -> bool {
    common::meshbpf(&["lsm", "check", "--help"]).code == 0
}

/// One test at a time: one counts lsm_monitor's programs in the kernel.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_policy(dir: &Path, name: &str, policy: Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, policy.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// The lsm_monitor element of `stats -j`.
fn lsm_stats(root: &PinRoot) -> Value {
    let all = root.meshbpf(&["stats", "-j"]).ok().json();
    all.as_array()
        .unwrap_or_else(|| panic!("stats is not an array: {all}"))
        .iter()
        .find(|entry| entry["program"] == "lsm_monitor")
        .unwrap_or_else(|| panic!("no lsm_monitor in {all}"))
        .clone()
}

fn opens(root: &PinRoot) -> (u64, u64, u64) {
    let open = &lsm_stats(root)["events"]["open"];
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

#[test]
fn opens_under_a_watched_directory_are_counted_exactly() {
    if !common::privileged() || !policy_parser_exists() {
        return;
    }
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

#[test]
fn policies_are_replaced_atomically_and_keep_the_mode() {
    if !common::privileged() || !policy_parser_exists() {
        return;
    }
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
    let stats = lsm_stats(&root);
    assert_eq!(
        stats["policy"]["generation"], 1,
        "the refused apply changed nothing"
    );
    assert_eq!(stats["mode"], "audit");
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

#[test]
fn enforce_is_refused_with_the_kernels_reason_and_attaches_nothing() {
    if !common::privileged() || !policy_parser_exists() {
        return;
    }
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

#[test]
fn apply_without_an_attachment_says_how_to_attach() {
    if !common::privileged() || !policy_parser_exists() {
        return;
    }
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
