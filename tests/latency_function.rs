//! `meshbpf latency --function`: fentry/fexit, else kprobe/kretprobe. This
//! machine's kernel refuses both (NOTES.md: trampolines fail to load with
//! EPERM, CONFIG_KPROBES is not set); each test asserts what the kernel it
//! runs on does, and the VM suite runs them on kernels that accept them.

mod common;

use std::path::Path;

use serde_json::Value;

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

fn measure(method: Option<&str>) -> (common::Ran, Option<Value>) {
    let mut args = vec![
        "latency",
        "--function",
        "vfs_read",
        "--duration",
        "0.3",
        "-j",
    ];
    if let Some(m) = method {
        args.extend(["--method", m]);
    }
    let ran = common::meshbpf(&args);
    let json = serde_json::from_str(&ran.stdout).ok();
    (ran, json)
}

/// A successful run reads its own histogram of vfs_read.
fn assert_measured(json: &Value, method: &str) {
    assert_eq!(json["method"], method);
    assert_eq!(json["function"]["name"], "vfs_read");
    assert!(json["function"]["count"].is_u64(), "{json}");
}

privileged_test!(
    fn forced_fentry_fails_with_the_kernels_reason_or_measures() {
        let (ran, json) = measure(Some("fentry"));
        let json = json.expect("JSON on stdout");
        if ran.code == 0 {
            assert_measured(&json, "fentry");
            return;
        }
        assert_eq!(ran.code, 1);
        let error = json["error"].as_str().unwrap();
        assert!(
            error.starts_with("measuring the latency of vfs_read with fentry/fexit: "),
            "{error}"
        );
        // This kernel refuses trampolines at BPF_PROG_LOAD, without a verifier log.
        assert!(
            error.ends_with(
                "the kernel refused to load syscall_latency (fentry/fexit) (EPERM) although the needed capabilities are present: program 'lat_fentry': Operation not permitted (os error 1)"
            ),
            "{error}"
        );
    }
);

privileged_test!(
    fn forced_kprobe_fails_with_the_kernels_reason_or_measures() {
        let (ran, json) = measure(Some("kprobe"));
        let json = json.expect("JSON on stdout");
        if Path::new(KPROBE_PMU).exists() {
            assert_eq!(ran.code, 0, "{ran:?}");
            assert_measured(&json, "kprobe");
            return;
        }
        assert_eq!(ran.code, 1);
        assert_eq!(
            json["error"],
            "measuring the latency of vfs_read with kprobe/kretprobe: attaching kprobe/kretprobe to vfs_read: \
    this kernel has no kprobes (/sys/bus/event_source/devices/kprobe does not exist: built without CONFIG_KPROBES): \
    failed to attach kprobe: No such file or directory (os error 2)"
        );
    }
);

privileged_test!(
    fn probing_names_both_reasons_when_both_are_refused() {
        let (ran, json) = measure(None);
        let json = json.expect("JSON on stdout");
        if ran.code == 0 {
            let method = json["method"].as_str().unwrap().to_string();
            assert!(["fentry", "kprobe"].contains(&method.as_str()), "{json}");
            assert_measured(&json, &method);
            return;
        }
        let error = json["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "the kernel refused every way to measure the latency of vfs_read: fentry/fexit: "
            ),
            "{error}"
        );
        assert!(error.contains("(EPERM)"), "{error}");
        assert!(
            error.contains("; kprobe/kretprobe: attaching kprobe/kretprobe to vfs_read: this kernel has no kprobes"),
            "{error}"
        );
        assert!(json["hint"].as_str().unwrap().contains("CONFIG_KPROBES"));
    }
);

#[test]
fn a_method_that_does_not_fit_is_refused_before_loading() {
    let ran = common::meshbpf(&[
        "latency",
        "--function",
        "vfs_read",
        "--method",
        "tp-btf",
        "-j",
    ]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("--method tp-btf: a kernel function has no tracepoint of its own"),
        "{ran:?}"
    );
    let ran = common::meshbpf(&["attach", "--latency", "--method", "kprobe", "-j"]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.json()["error"].as_str().unwrap().starts_with(
            "--method kprobe: syscall latency is measured at the raw_syscalls tracepoints"
        ),
        "{ran:?}"
    );
}

privileged_test!(
    fn an_unknown_function_is_named_before_any_method_is_tried() {
        let ran = common::meshbpf(&["latency", "--function", "meshbpf_no_such_fn", "-j"]);
        assert_eq!(ran.code, 1);
        let err = ran.json();
        assert_eq!(
            err["error"],
            "meshbpf_no_such_fn is not a function of the running kernel (not a text symbol in /proc/kallsyms)"
        );
        assert!(err["hint"]
            .as_str()
            .unwrap()
            .starts_with("look for the right name"));
    }
);
