//! syscall_latency on the host kernel: children with known syscalls, timed
//! through the real binary's `attach --latency`, `latency` and `detach`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use common::{blocked, held_python, link_exists, release, PinRoot};
use serde_json::{json, Value};

/// A pin root of its own per test: the host-wide attachment is one per root,
/// and tests run in parallel.
/// Where syscall_latency pins itself under a test's own root.
fn latency_dir(root: &PinRoot) -> PathBuf {
    root.path.join("host/syscall_latency")
}

/// The tests of this file run one at a time. A sleep measured to land in
/// one bucket must not wake on a CPU that another test keeps busy inside the
/// kernel (verifying and JIT-compiling a program is not preemptible
/// everywhere): that delayed one wake-up here by 8 ms.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A held python3 child, with syscall_latency attached for its pid and `options`;
/// returns it and what attach printed.
fn traced_child(root: &PinRoot, body: &str, options: &[&str]) -> (Child, Value) {
    let child = held_python(body);
    let pid = child.id().to_string();
    let mut args = vec!["attach", "--latency", "--pid", &pid, "-j"];
    args.extend_from_slice(options);
    let attached = root.meshbpf(&args).ok().json();
    (child, attached)
}

/// 1.5 ms sits in the middle of the [2^20, 2^21) ns bucket, 0.6 ms from its
/// upper edge. SCHED_FIFO wakes the sleeper on time (and without timer
/// slack) while other tests keep both CPUs busy.
/// It prints the longest sleep as it measured it itself.
const SLEEPS: &str = "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))\n\
slowest = 0\n\
for _ in range(20): t = time.monotonic_ns(); time.sleep(0.0015); \
slowest = max(slowest, time.monotonic_ns() - t)\n\
print(slowest)";

/// The upper edge of the bucket the sleeps belong in.
const BUCKET_END_NS: u64 = 2_097_151;

fn syscall<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["syscalls"]
        .as_array()
        .expect("syscalls array")
        .iter()
        .find(|s| s["name"] == name)
}

/// Exact counts need sleeps that really ended in their bucket. A machine
/// that woke the sleeper late (the sleeper's own clock says so) gives an
/// attempt that proves nothing, and the test makes another; three in a row
/// fail it.
fn sleeps_are_counted_exactly(method: &str, expected: &str) {
    for attempt in 1..=3 {
        if sleeps_attempt(method, expected) {
            return;
        }
        eprintln!(
            "attempt {attempt}: a 1.5 ms sleep overslept its bucket by the sleeper's own clock"
        );
    }
    panic!("three attempts in a row, this machine woke a 1.5 ms sleeper past {BUCKET_END_NS} ns");
}

/// False when the sleeper overslept; otherwise asserts everything.
fn sleeps_attempt(method: &str, expected: &str) -> bool {
    let root = PinRoot::new();
    let (sleeper, attached) = traced_child(&root, SLEEPS, &["--method", method]);
    assert_eq!(attached["method"], expected);
    assert_eq!(attached["filters"], json!({"pid": sleeper.id()}));
    let stats = root.meshbpf(&["stats", "-j"]).ok().json();
    assert_eq!(stats.as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(stats[0]["program"], "syscall_latency");
    assert_eq!(stats[0]["method"], expected);
    assert_eq!(stats[0]["link_ids"], attached["link_ids"]);
    let health = root.meshbpf(&["health", "-j"]).ok().json();
    let check = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "syscall_latency")
        .unwrap_or_else(|| panic!("no syscall_latency check: {health}"));
    assert_eq!(check["status"], "ok", "{check}");
    let ids = &attached["link_ids"];
    let method = format!("attached with {expected} (links {} and {})", ids[0], ids[1]);
    assert!(
        check["detail"].as_str().unwrap().starts_with(&method),
        "{check}"
    );
    let slowest: u64 = release(sleeper).trim().parse().expect("the slowest sleep");
    if slowest > BUCKET_END_NS {
        return false;
    }

    let report = root
        .meshbpf(&["latency", "--syscall", "clock_nanosleep", "-j"])
        .ok()
        .json();
    assert_eq!(report["method"], expected);
    let rows = report["syscalls"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let sleeps = &rows[0];
    assert_eq!(sleeps["name"], "clock_nanosleep");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(sleeps["nr"], 230);
    }
    assert_eq!(sleeps["count"], 20);
    assert_eq!(
        sleeps["buckets"],
        json!([{"le_ns": 2_097_151, "count": 20}]),
        "{report}"
    );
    let total = sleeps["total_ns"].as_u64().unwrap();
    assert!(
        (20 * 1_500_000..20 * 2_097_152).contains(&total),
        "total {total}"
    );
    let p50 = sleeps["p50_ns"].as_u64().unwrap();
    assert!((1_048_576..=2_097_151).contains(&p50), "p50 {p50}");

    let table = root
        .meshbpf(&["latency", "--syscall", "clock_nanosleep"])
        .ok();
    assert!(
        table
            .stdout
            .contains("1048576 -> 2097151 : 20         |****************************************|"),
        "{}",
        table.stdout
    );
    true
}

privileged_test!(
    fn sleeps_land_in_their_bucket_with_tp_btf() {
        let _serial = serial();
        sleeps_are_counted_exactly("tp-btf", "tp_btf");
    }
);

privileged_test!(
    fn sleeps_land_in_their_bucket_with_raw_tp() {
        let _serial = serial();
        sleeps_are_counted_exactly("raw-tp", "raw_tp");
    }
);

privileged_test!(
    fn the_pid_filter_excludes_other_processes() {
        let _serial = serial();
        let root = PinRoot::new();
        let (traced, _) = traced_child(&root, "for _ in range(3): time.sleep(0.0015)", &[]);
        let other = held_python(SLEEPS);
        release(other);
        release(traced);
        let report = root.meshbpf(&["latency", "-j"]).ok().json();
        let sleeps = syscall(&report, "clock_nanosleep").expect("the traced child's sleeps");
        assert_eq!(sleeps["count"], 3, "{report}");
    }
);

privileged_test!(
    fn the_syscalls_filter_keeps_only_those() {
        let _serial = serial();
        let root = PinRoot::new();
        let (caller, attached) = traced_child(
            &root,
            "for _ in range(100): os.getpid()\ntime.sleep(0.0015)",
            &["--syscalls", "getpid"],
        );
        assert_eq!(attached["filters"]["syscalls"], json!(["getpid"]));
        release(caller);
        let report = root.meshbpf(&["latency", "-j"]).ok().json();
        let rows = report["syscalls"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{report}");
        assert_eq!(
            (rows[0]["name"].as_str(), rows[0]["count"].as_u64()),
            (Some("getpid"), Some(100))
        );
    }
);

privileged_test!(
    fn detach_leaves_no_pins_and_no_links() {
        let _serial = serial();
        let root = PinRoot::new();
        let attached = root.meshbpf(&["attach", "--latency", "-j"]).ok().json();
        let links: Vec<u64> = attached["link_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        assert_eq!(links.len(), 2);
        assert!(links.iter().all(|&l| link_exists(l)));
        let again = root.meshbpf(&["attach", "--latency", "-j"]).ok().json();
        assert_eq!(again["status"], "already_attached");
        assert_eq!(again["link_ids"], attached["link_ids"]);
        let changed = root.meshbpf(&["attach", "--latency", "--pid", "1", "-j"]);
        assert_eq!(changed.code, 1);
        assert_eq!(
            changed.json()["error"],
            "syscall_latency is already attached (tp_btf); its filters are fixed at load"
        );

        let detached = root.meshbpf(&["detach", "--latency", "-j"]).ok().json();
        assert_eq!(detached["detached"], true);
        assert_eq!(detached["link_ids"], attached["link_ids"]);
        assert!(!latency_dir(&root).exists());
        assert!(!root.path.join("host").exists());
        for link in links {
            assert!(!link_exists(link), "link {link} still exists");
        }
        let nothing = root.meshbpf(&["detach", "--latency", "-j"]).ok().json();
        assert_eq!(nothing["detached"], false);
    }
);

privileged_test!(
    fn bad_filters_fail_with_a_hint_and_attach_nothing() {
        let _serial = serial();
        let root = PinRoot::new();
        let ran = root.meshbpf(&[
            "attach",
            "--latency",
            "--syscalls",
            "read,clock_nanoslep",
            "-j",
        ]);
        assert_eq!(ran.code, 1, "{ran:?}");
        let err = ran.json();
        assert_eq!(
            err["error"],
            format!(
                "'clock_nanoslep' is not a syscall on {}",
                std::env::consts::ARCH
            )
        );
        assert_eq!(err["hint"], "did you mean clock_nanosleep?");
        assert!(!latency_dir(&root).exists());

        let ran = root.meshbpf(&["attach", "--latency", "--cgroup", "/proc", "-j"]);
        assert_eq!(ran.code, 1, "{ran:?}");
        assert_eq!(
            ran.json()["error"],
            "--cgroup /proc: not a directory of a cgroup v2 hierarchy"
        );
        assert!(!latency_dir(&root).exists());

        let ran = root.meshbpf(&["latency", "--syscall", "frobnicate"]);
        assert_eq!(ran.code, 1);
        assert!(
            ran.stderr.contains("'frobnicate' is not a syscall"),
            "{ran:?}"
        );
    }
);

privileged_test!(
    fn reading_without_an_attachment_says_how_to_attach() {
        let _serial = serial();
        let root = PinRoot::new();
        let ran = root.meshbpf(&["latency", "-j"]);
        assert_eq!(ran.code, 1);
        let err = ran.json();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("syscall latency is not being measured"),
            "{err}"
        );
        assert!(err["hint"]
            .as_str()
            .unwrap()
            .contains("meshbpf attach --latency"));
    }
);

privileged_test!(
    fn intervals_stream_deltas_until_ctrl_c() {
        let _serial = serial();
        let root = PinRoot::new();
        let (caller, _) =
            traced_child(&root, "for _ in range(50): os.getpid()\ntime.sleep(1)", &[]);
        let mut stream = Command::new(common::BIN)
            .args(root.args(&["latency", "--syscall", "getpid"]))
            .args(["--interval", "0.2", "-j"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning latency --interval");
        let mut lines = BufReader::new(stream.stdout.take().expect("piped stdout"))
            .lines()
            .map(|l| -> Value {
                serde_json::from_str(&l.expect("a line")).expect("one JSON object per line")
            });
        let counted = |line: &Value| -> u64 {
            assert!(line["interval_end"].is_string(), "{line}");
            line["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["count"].as_u64().unwrap())
                .sum()
        };
        // The first interval has ended, so the baseline was read before the calls.
        let mut total = counted(&lines.next().expect("a first interval"));
        release(caller);
        let mut intervals = 1;
        while total < 50 && intervals < 100 {
            total += counted(&lines.next().expect("another interval"));
            intervals += 1;
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stream.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("sending SIGINT");
        total += lines.map(|l| counted(&l)).sum::<u64>();
        assert_eq!(total, 50);
        assert_eq!(
            stream.wait().expect("waiting for latency").code(),
            Some(130)
        );
    }
);

privileged_test!(
    fn the_comm_filter_selects_by_command_name() {
        let _serial = serial();
        let root = PinRoot::new();
        let renamed = held_python(
            "open('/proc/self/comm', 'w').write('mblat-traced')\nfor _ in range(4): time.sleep(0.0015)",
        );
        let other = held_python(SLEEPS);
        let attached = root
            .meshbpf(&["attach", "--latency", "--comm", "mblat-traced", "-j"])
            .ok()
            .json();
        assert_eq!(attached["filters"], json!({"comm": "mblat-traced"}));
        release(other);
        release(renamed);
        let report = root
            .meshbpf(&["latency", "--syscall", "clock_nanosleep", "-j"])
            .ok()
            .json();
        assert_eq!(report["syscalls"][0]["count"], 4, "{report}");
    }
);

/// A cgroup v2 directory of its own, removed when dropped.
struct Cgroup {
    path: std::path::PathBuf,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.path.join("inner"));
        let _ = std::fs::remove_dir(&self.path);
    }
}

privileged_test!(
    fn the_cgroup_filter_counts_the_cgroup_and_below() {
        let _serial = serial();
        let unified = Path::new("/sys/fs/cgroup/unified");
        let base = if unified.is_dir() {
            unified
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let cgroup = Cgroup {
            path: base.join(format!("meshbpf-lat{}", std::process::id())),
        };
        std::fs::create_dir_all(cgroup.path.join("inner")).expect("creating a cgroup");
        let inside = held_python("for _ in range(5): time.sleep(0.0015)");
        let outside = held_python(SLEEPS);
        std::fs::write(
            cgroup.path.join("inner/cgroup.procs"),
            inside.id().to_string(),
        )
        .expect("moving the child into the cgroup");
        let root = PinRoot::new();
        let path = cgroup.path.display().to_string();
        let attached = root
            .meshbpf(&["attach", "--latency", "--cgroup", &path, "-j"])
            .ok()
            .json();
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cgroup.path).unwrap());
        assert_eq!(attached["filters"], json!({"cgroup_id": id}));
        release(outside);
        release(inside);
        let report = root
            .meshbpf(&["latency", "--syscall", "clock_nanosleep", "-j"])
            .ok()
            .json();
        assert_eq!(report["syscalls"][0]["count"], 5, "{report}");
    }
);

privileged_test!(
    /// ia32 syscalls (int 0x80 from a 64-bit process) have numbers of their own:
    /// the 7 ia32 getpid() calls (number 20) must not count as writev (x86_64
    /// number 20), while its 3 x86_64 getpid() calls count.
    #[cfg(target_arch = "x86_64")]
    fn ia32_syscalls_are_not_counted_under_x86_64_numbers() {
        let _serial = serial();
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("ia32_getpid");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ia32_getpid.c");
        let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into());
        common::must(&format!(
            "{clang} -O2 -o {} {}",
            binary.display(),
            source.display()
        ));
        let root = PinRoot::new();
        let caller = blocked(&mut Command::new(&binary));
        let pid = caller.id().to_string();
        root.meshbpf(&["attach", "--latency", "--pid", &pid]).ok();
        release(caller);
        let report = root.meshbpf(&["latency", "-j"]).ok().json();
        assert!(syscall(&report, "writev").is_none(), "{report}");
        // Its 64-bit calls are counted: the read that returned the byte started
        // before the attach, so the one to count is exit_group's absence and
        // the process's last calls.
        assert!(
            !report["syscalls"].as_array().unwrap().is_empty(),
            "{report}"
        );
    }
);
