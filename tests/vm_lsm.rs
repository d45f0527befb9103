//! lsm_monitor with BPF LSM programs, which this host refuses: audit events
//! for exec, opens and ptrace, and enforcement (write denied, allow-lists,
//! module loading, policy replacement). Runs only in the VM suite
//! (`test = false`; tests/vm/tests lists it) on 6.1 and 6.12.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{held_python, release, PinRoot};
use serde_json::Value;

const EPERM: i32 = 1;

/// A policy file in `dir`.
fn policy(dir: &Path, name: &str, body: &Value) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body.to_string()).expect("writing the policy");
    path
}

/// A monitor on its own pin root, attached with `policy` in `mode`.
fn attach(root: &PinRoot, policy: &Path, enforce: bool) -> Value {
    let policy = policy.to_str().unwrap();
    let mut args = vec!["attach", "--lsm", "--policy", policy, "-j"];
    if enforce {
        args.push("--enforce");
    }
    let attached = root.meshbpf(&args).ok().json();
    assert_eq!(attached["method"], "lsm", "{attached}");
    assert_eq!(
        attached["mode"],
        if enforce { "enforce" } else { "audit" },
        "{attached}"
    );
    attached
}

fn of_pid<'a>(events: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["pid"] == pid)
        .collect()
}

/// Python that opens `path` for writing and prints "ok" or the errno.
fn try_write(path: &Path) -> String {
    format!(
        "try:\n    fd = os.open({:?}, os.O_WRONLY | os.O_APPEND)\n    os.write(fd, b'x')\n    print('ok')\nexcept OSError as e:\n    print(e.errno)",
        path.to_str().unwrap()
    )
}

privileged_test!(
    fn exec_open_and_ptrace_attach_are_reported_in_audit_mode() {
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("watched");
        fs::create_dir(&watched).unwrap();
        let file = watched.join("file");
        fs::write(&file, "x").unwrap();
        let root = PinRoot::new();
        let p = policy(
            dir.path(),
            "audit.json",
            &serde_json::json!({ "watch": [watched] }),
        );
        attach(&root, &p, false);

        let tool = dir.path().join("meshbpf-true");
        fs::copy("/bin/true", &tool).unwrap();
        let exec = Command::new(&tool).spawn().unwrap();
        let exec_pid = exec.id();
        assert!(exec.wait_with_output().unwrap().status.success());

        let writer = held_python(&try_write(&file));
        let writer_pid = writer.id();
        assert_eq!(release(writer).trim(), "ok");

        let mut tracee = Command::new("sleep").arg("60").spawn().unwrap();
        let tracer = held_python(&format!(
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             assert libc.ptrace(16, {0}, 0, 0) == 0, ctypes.get_errno()\n\
             os.waitpid({0}, 0)\nassert libc.ptrace(17, {0}, 0, 0) == 0\nprint('ok')",
            tracee.id()
        ));
        let tracer_pid = tracer.id();
        assert_eq!(release(tracer).trim(), "ok");
        tracee.kill().unwrap();
        tracee.wait().unwrap();

        let (events, summary) = root.events(&[]);
        assert_eq!(summary["lost"], 0, "{summary}");
        let execs = of_pid(&events, "exec", exec_pid);
        assert_eq!(execs.len(), 1, "{execs:?}");
        assert_eq!(execs[0]["path"], tool.to_str().unwrap());
        assert_eq!(execs[0]["hook"], "bprm_check_security");
        assert_eq!(execs[0]["method"], "lsm");
        assert_eq!(execs[0]["verdict"], "allowed");

        let opens = of_pid(&events, "open", writer_pid);
        assert_eq!(opens.len(), 1, "{opens:?}");
        assert_eq!(opens[0]["path"], file.to_str().unwrap());
        assert_eq!(opens[0]["access"], "write");
        assert!(
            opens[0]["flags"]
                .as_array()
                .unwrap()
                .contains(&"O_WRONLY".into()),
            "{}",
            opens[0]
        );
        assert_eq!(opens[0]["hook"], "file_open");

        let traces = of_pid(&events, "ptrace", tracer_pid);
        assert_eq!(traces.len(), 1, "{traces:?}");
        assert_eq!(traces[0]["target_pid"], tracee.id());
        assert_eq!(traces[0]["target_comm"], "sleep");
        assert_eq!(traces[0]["comm"], "python3");
        assert!(
            traces[0]["mode"]
                .as_array()
                .unwrap()
                .contains(&"attach".into()),
            "{}",
            traces[0]
        );

        let monitor = root.lsm_stats();
        assert_eq!(monitor["mode"], "audit", "{monitor}");
        assert_eq!(monitor["method"], "lsm", "{monitor}");
        assert_eq!(monitor["events"]["open"]["events"], 1, "{monitor}");
        assert_eq!(monitor["lost_total"], 0, "{monitor}");
        root.meshbpf(&["detach", "--lsm"]).ok();
    }
);

/// A world-writable file in a directory that `nobody` can enter.
fn shared_file(dir: &Path, name: &str) -> PathBuf {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.join(name);
    fs::write(&file, "before\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    file
}

/// Appends to `file` as `uid` with `setpriv`: its exit status.
fn write_as(uid: u32, file: &Path) -> bool {
    let uid = uid.to_string();
    Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
        .args(["sh", "-c", "echo more >> \"$0\""])
        .arg(file)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

privileged_test!(
    fn enforce_denies_writes_but_not_reads_and_spares_the_allow_listed() {
        let dir = tempfile::tempdir().unwrap();
        let protected = dir.path().join("protected");
        fs::create_dir(&protected).unwrap();
        let file = shared_file(&protected, "file");
        let root = PinRoot::new();
        let p = policy(
            dir.path(),
            "enforce.json",
            &serde_json::json!({
                "deny": { "write": [protected] },
                "allow": { "uid": [65533], "comm": ["allowed-writer"] }
            }),
        );
        attach(&root, &p, true);

        let err = fs::OpenOptions::new().append(true).open(&file).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EPERM), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "before\n");
        assert!(
            write_as(65533, &file),
            "an allow-listed uid could not write"
        );
        assert!(
            !write_as(65534, &file),
            "a uid outside the allow-list wrote"
        );
        let renamed = held_python(&format!(
            "import ctypes\nctypes.CDLL(None).prctl(15, b'allowed-writer', 0, 0, 0)\n{}",
            try_write(&file)
        ));
        assert_eq!(release(renamed).trim(), "ok");
        let denied = held_python(&try_write(&file));
        let denied_pid = denied.id();
        assert_eq!(release(denied).trim(), EPERM.to_string());
        assert_eq!(fs::read_to_string(&file).unwrap(), "before\nmore\nx");

        let (events, _) = root.events(&[]);
        let opens = of_pid(&events, "open", denied_pid);
        assert_eq!(opens.len(), 1, "{opens:?}");
        assert_eq!(opens[0]["verdict"], "denied");
        assert_eq!(opens[0]["path"], file.to_str().unwrap());

        root.meshbpf(&["detach", "--lsm"]).ok();
        fs::OpenOptions::new().append(true).open(&file).unwrap();
    }
);

/// dummy.ko of the running kernel, from the package the VM suite unpacked
/// (tests/vm/cache), decompressed where Debian ships it with xz.
fn dummy_module(into: &Path) -> PathBuf {
    let kernel = String::from_utf8(common::sh("uname -r").stdout).unwrap();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/cache");
    let found = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|k| {
            k.path()
                .join("root/lib/modules")
                .join(kernel.trim())
                .join("kernel/drivers/net/dummy.ko")
        })
        .flat_map(|ko| [ko.with_extension("ko.xz"), ko])
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no dummy.ko for {kernel} under {}", cache.display()));
    let ko = into.join("dummy.ko");
    if found.extension().is_some_and(|e| e == "xz") {
        let out = common::run(Command::new("xz").arg("-dc").arg(&found));
        assert!(out.status.success(), "{out:?}");
        fs::write(&ko, out.stdout).unwrap();
    } else {
        fs::copy(&found, &ko).unwrap();
    }
    ko
}

privileged_test!(
    fn module_loading_is_denied_until_detach() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dummy_module(dir.path());
        let root = PinRoot::new();
        let p = policy(
            dir.path(),
            "modules.json",
            &serde_json::json!({ "deny": { "modules": true } }),
        );
        attach(&root, &p, true);
        let insmod = common::run(Command::new("insmod").arg(&ko));
        assert!(!insmod.status.success(), "insmod succeeded under enforce");
        assert!(
            String::from_utf8_lossy(&insmod.stderr).contains("Operation not permitted"),
            "{insmod:?}"
        );
        let (events, _) = root.events(&[]);
        let denied: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "module" && e["module_kind"] == "load_file")
            .collect();
        assert_eq!(denied.len(), 1, "{events:?}");
        assert_eq!(denied[0]["verdict"], "denied");
        assert_eq!(denied[0]["path"], ko.to_str().unwrap());

        root.meshbpf(&["detach", "--lsm"]).ok();
        common::must(&format!("insmod {}", ko.display()));
        common::must("rmmod dummy");
    }
);

privileged_test!(
    fn replacing_the_policy_flips_a_verdict_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, flipped) = (dir.path().join("kept"), dir.path().join("flipped"));
        fs::create_dir(&kept).unwrap();
        fs::create_dir(&flipped).unwrap();
        let kept_file = shared_file(&kept, "file");
        let flipped_file = shared_file(&flipped, "file");
        let root = PinRoot::new();
        let both = policy(
            dir.path(),
            "both.json",
            &serde_json::json!({ "deny": { "write": [&kept, &flipped] } }),
        );
        let one = policy(
            dir.path(),
            "one.json",
            &serde_json::json!({ "deny": { "write": [&kept] } }),
        );
        attach(&root, &both, true);

        // A writer hammers the file both policies protect while they swap.
        let mut hammer = Command::new("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                    "import os, sys\nok = tries = 0\n\
                     while not os.path.exists({stop:?}):\n    tries += 1\n    try:\n        \
                     os.close(os.open({file:?}, os.O_WRONLY | os.O_APPEND)); ok += 1\n    \
                     except PermissionError:\n        pass\nprint(tries, ok)",
                    stop = dir.path().join("stop").to_str().unwrap(),
                    file = kept_file.to_str().unwrap()
                ),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut generations = Vec::new();
        for round in 0..10 {
            let next = if round % 2 == 0 { &one } else { &both };
            let applied = root
                .meshbpf(&["lsm", "apply", next.to_str().unwrap(), "-j"])
                .ok()
                .json();
            assert_eq!(applied["status"], "policy_replaced", "{applied}");
            assert_eq!(applied["mode"], "enforce", "{applied}");
            generations.push(applied["generation"].as_u64().unwrap());
            let flipped_ok = fs::OpenOptions::new()
                .append(true)
                .open(&flipped_file)
                .is_ok();
            assert_eq!(
                flipped_ok,
                round % 2 == 0,
                "round {round}: the flipped verdict"
            );
        }
        fs::write(dir.path().join("stop"), "").unwrap();
        let mut line = String::new();
        BufReader::new(hammer.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(hammer.wait().unwrap().success());
        let counts: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(counts[0] > 0, "the writer never ran: {line}");
        assert_eq!(
            counts[1], 0,
            "writes got through during replacements: {line}"
        );
        assert!(
            generations.windows(2).all(|w| w[0] != w[1]),
            "each replacement writes the other generation: {generations:?}"
        );
        root.meshbpf(&["detach", "--lsm"]).ok();
    }
);
