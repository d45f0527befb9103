//! What meshbpf itself does on kernels that accept the hooks this host
//! refuses: health sees them, and `latency --function` counts exactly the
//! calls a process makes, with fentry/fexit and with kprobe/kretprobe. Runs
//! only in the VM suite (`test = false`; tests/vm/tests lists it).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde_json::Value;

privileged_test!(
    fn health_reports_kprobe_fentry_and_lsm_as_available() {
        let health = common::meshbpf(&["health", "-j"]).ok().json();
        for hook in ["kprobe", "fentry", "lsm", "tp_btf", "raw_tp"] {
            assert_eq!(
                health["hooks"][hook]["available"], true,
                "{hook}: {}",
                health["hooks"][hook]
            );
        }
    }
);

/// Names of the programs behind the kernel's live links.
fn linked_programs() -> Vec<String> {
    let links = common::run(Command::new("bpftool").args(["-j", "link", "show"]));
    let links: Value = serde_json::from_slice(&links.stdout).unwrap_or(Value::Null);
    let progs = common::run(Command::new("bpftool").args(["-j", "prog", "show"]));
    let progs: Value = serde_json::from_slice(&progs.stdout).expect("bpftool prog show -j");
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| {
            progs
                .as_array()?
                .iter()
                .find(|p| p["id"] == link["prog_id"])
                .and_then(|p| p["name"].as_str().map(str::to_owned))
        })
        .collect()
}

/// `latency --function vfs_read --pid CHILD`, where the child reads
/// /dev/zero exactly `reads` times once released: one vfs_read each. Ended
/// by Ctrl-C once the child is done, which prints what was measured.
fn count_reads(method: &str, programs: [&str; 2], reads: usize) -> Value {
    let child = common::held_python(&format!(
        "fd = os.open('/dev/zero', os.O_RDONLY)\nfor _ in range({reads}): os.read(fd, 1)"
    ));
    let pid = child.id().to_string();
    let latency = Command::new(common::BIN)
        .args(["latency", "--function", "vfs_read", "--pid", &pid])
        .args(["--method", method, "--duration", "600", "-j"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning meshbpf latency");
    // Both ends: on 6.1 the exit program's trampoline comes up well after
    // the entry's, and calls made in between are never completed.
    common::wait_for(Duration::from_secs(60), || {
        let linked = linked_programs();
        programs
            .iter()
            .all(|p| linked.iter().any(|name| name == p))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{programs:?} never both got links"));
    common::release(child);
    let meshbpf = Pid::from_raw(latency.id() as i32);
    signal::kill(meshbpf, Signal::SIGINT).expect("SIGINT to meshbpf latency");
    let out = latency.wait_with_output().expect("meshbpf latency");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

privileged_test!(
    fn latency_function_counts_every_call_with_fentry_and_with_kprobe() {
        for (method, programs) in [
            ("fentry", ["lat_fentry", "lat_fexit"]),
            ("kprobe", ["lat_kprobe", "lat_kretprobe"]),
        ] {
            let report = count_reads(method, programs, 100);
            assert_eq!(report["method"], method, "{report}");
            assert_eq!(report["function"]["name"], "vfs_read");
            assert_eq!(report["function"]["count"], 100, "{method}: {report}");
            let linked = linked_programs();
            assert!(
                programs.iter().all(|p| !linked.iter().any(|n| n == p)),
                "{programs:?} left linked: {linked:?}"
            );
        }
    }
);
