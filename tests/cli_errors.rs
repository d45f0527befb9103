//! Every error an operator can meet in the foundation, through the real
//! binary: what it says, the exit code, and that nothing was left behind.

mod common;

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use common::{compile_fixture, in_private_mounts, meshbpf, VethPair, BIN, UNMOUNT_BPFFS};
use serde_json::Value;

#[test]
fn an_unknown_interface_is_named_with_the_ones_that_exist() {
    let r = meshbpf(&["attach", "nosuchif0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("interface 'nosuchif0' does not exist in this network namespace"),
        "{r:?}"
    );
    assert!(r.stderr.contains("hint: interfaces here: lo"), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");

    let j = meshbpf(&["attach", "nosuchif0", "-j"]);
    assert_eq!(j.code, 1);
    let err = j.json();
    assert!(
        err["error"].as_str().unwrap().contains("nosuchif0"),
        "{err}"
    );
    assert!(err["hint"].as_str().unwrap().contains("lo"), "{err}");

    let bad = meshbpf(&["attach", "a/b"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("'a/b' is not a valid interface name"),
        "{bad:?}"
    );
}

privileged_test!(
    fn missing_privileges_are_named() {
        let attach = common::as_nobody(&["attach", "lo", "-j"]);
        assert_eq!(attach.code, 1, "{attach:?}");
        let err = attach.json()["error"].as_str().unwrap().to_string();
        assert!(
            err.contains("attach needs capabilities this process lacks"),
            "{err}"
        );
        assert!(
            err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN"),
            "{err}"
        );

        let stats = common::as_nobody(&["stats"]);
        assert_eq!(stats.code, 1);
        assert!(
            stats.stderr.contains("stats needs capabilities") && stats.stderr.contains("CAP_BPF"),
            "{stats:?}"
        );
        assert!(stats.stderr.contains("hint: run it as root"), "{stats:?}");
    }
);

privileged_test!(
    fn attach_without_cap_sys_admin_names_it_and_attaches_nothing() {
        let net = VethPair::new();
        let caps = "-all,+bpf,+net_admin,+perfmon";
        let attach = common::Ran::from(common::run(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", net.ns))
                .args([
                    "--",
                    "setpriv",
                    "--bounding-set",
                    caps,
                    "--inh-caps",
                    caps,
                    "--",
                ])
                .args([BIN, "attach", &net.dev, "-j"]),
        ));
        assert_eq!(attach.code, 1, "{attach:?}");
        let err = attach.json()["error"].as_str().unwrap().to_string();
        assert!(
            err.starts_with("attach needs capabilities this process lacks: CAP_SYS_ADMIN"),
            "{err}"
        );
        assert_eq!(net.xdp_prog_id(), None);
        assert!(
            !net.pin_dir().exists(),
            "{} was left",
            net.pin_dir().display()
        );
    }
);

privileged_test!(
    fn a_missing_bpffs_is_mounted_when_root() {
        let net = VethPair::new();
        let r = in_private_mounts(&format!(
            "{UNMOUNT_BPFFS}
         ! stat -f -c %T /sys/fs/bpf | grep -qx bpf_fs
         nsenter --net=/run/netns/{ns} \"$BIN\" attach {dev} -j
         stat -f -c %T /sys/fs/bpf
         nsenter --net=/run/netns/{ns} \"$BIN\" detach {dev} -j >/dev/null",
            ns = net.ns,
            dev = net.dev
        ));
        assert_eq!(r.code, 0, "{r:?}");
        let mut lines = r.stdout.lines();
        let attached: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(attached["status"], "attached");
        assert_eq!(lines.next(), Some("bpf_fs"));
        // JSON mode keeps stderr for errors only; the note is for people.
        let human = in_private_mounts(&format!(
            "{UNMOUNT_BPFFS}
         nsenter --net=/run/netns/{ns} \"$BIN\" attach {dev} --mode skb
         nsenter --net=/run/netns/{ns} \"$BIN\" detach {dev} >/dev/null",
            ns = net.ns,
            dev = net.dev
        ));
        assert_eq!(human.code, 0, "{human:?}");
        assert!(
            human.stderr.contains("mounted bpffs at /sys/fs/bpf"),
            "{human:?}"
        );
    }
);

privileged_test!(
    fn a_missing_bpffs_without_cap_sys_admin_says_how_to_mount_it() {
        let r = in_private_mounts(&format!(
            "{UNMOUNT_BPFFS}
         exec setpriv --bounding-set=-sys_admin -- \"$BIN\" attach lo --mode skb"
        ));
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("no bpffs is mounted at /sys/fs/bpf"),
            "{r:?}"
        );
        // mode=0700: on a default (1777) bpffs any user could plant the root.
        assert!(
            r.stderr
                .contains("mount -t bpf -o mode=0700 bpf /sys/fs/bpf"),
            "{r:?}"
        );
    }
);

privileged_test!(
    fn a_root_outside_any_bpffs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("meshbpf");
        let r = meshbpf(&[
            "attach",
            "lo",
            "--mode",
            "skb",
            "--bpffs",
            root.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("is not on a bpffs"), "{r:?}");
        assert!(r.stderr.contains("mount -t bpf -o mode=0700 bpf"), "{r:?}");
        assert!(!root.exists(), "nothing was created");
    }
);

privileged_test!(
    fn missing_kernel_btf_is_explained_and_btf_can_be_supplied() {
        let net = VethPair::new();
        let btf = tempfile::tempdir().unwrap();
        let btf_copy = btf.path().join("vmlinux");
        std::fs::copy("/sys/kernel/btf/vmlinux", &btf_copy).unwrap();
        let r = in_private_mounts(&format!(
            "mount -t tmpfs none /sys/kernel/btf
         nsenter --net=/run/netns/{ns} \"$BIN\" attach {dev} || echo \"exit=$?\"
         test ! -e /sys/fs/bpf/meshbpf/net/{dev}
         nsenter --net=/run/netns/{ns} \"$BIN\" attach {dev} --btf {btf} -j
         nsenter --net=/run/netns/{ns} \"$BIN\" detach {dev} -j >/dev/null",
            ns = net.ns,
            dev = net.dev,
            btf = btf_copy.display()
        ));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.stderr
                .contains("this kernel exposes no BTF at /sys/kernel/btf/vmlinux"),
            "{r:?}"
        );
        assert!(r.stderr.contains("--btf FILE"), "{r:?}");
        let mut lines = r.stdout.lines();
        assert_eq!(lines.next(), Some("exit=1"));
        let attached: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(attached["status"], "attached", "{r:?}");
    }
);

privileged_test!(
    fn a_foreign_xdp_program_is_named_and_never_replaced() {
        let (_dir, obj) = compile_fixture("foreign_pass");
        for (ip_mode, mode) in [("xdpgeneric", "skb"), ("xdpdrv", "native")] {
            let net = VethPair::new();
            common::must(&format!(
                "ip -n {} link set dev {} {ip_mode} obj {} sec xdp",
                net.ns,
                net.dev,
                obj.display()
            ));
            let foreign = net.xdp_prog_id().expect("fixture attached");

            let r = net.meshbpf(&["attach", &net.dev]);
            assert_eq!(r.code, 1, "{r:?}");
            let expected = format!("already runs an XDP program that meshbpf did not attach: id {foreign}, name 'foreign_pass', {mode} mode");
            assert!(r.stderr.contains(&expected), "{r:?}");
            assert!(
                r.stderr.contains("never replaces another tool's program"),
                "{r:?}"
            );
            assert_eq!(
                net.xdp_prog_id(),
                Some(foreign),
                "the foreign program is still there"
            );
            assert!(!net.pin_dir().exists(), "no pins were left");

            let detach = net.meshbpf(&["detach", &net.dev, "-j"]).ok().json();
            assert_eq!(detach["detached"], serde_json::json!([]));
            assert_eq!(detach["foreign_xdp_prog"]["id"], foreign);
            assert_eq!(detach["foreign_xdp_prog"]["name"], "foreign_pass");
            assert_eq!(
                net.xdp_prog_id(),
                Some(foreign),
                "detach leaves it alone too"
            );
        }
    }
);

privileged_test!(
    fn a_verifier_rejection_shows_the_log_excerpt_and_source_line() {
        let (_dir, obj) = compile_fixture("verifier_reject");
        meshbpf::kernel::verifier::install();
        let err = meshbpf::kernel::verifier::load("verifier_reject", || {
            libbpf_rs::ObjectBuilder::default().open_file(&obj)?.load()
        })
        .expect_err("the fixture reads past the packet without a bounds check");
        let explained = meshbpf::error::explain(&err);
        assert!(
            explained
                .message
                .starts_with("the kernel verifier rejected verifier_reject"),
            "{}",
            explained.message
        );
        let detail = explained
            .detail
            .unwrap_or_else(|| panic!("no verifier excerpt in {}", explained.message));
        assert!(
            detail.contains("verifier_reject.bpf.c:15: return data[14] == 1 ? 1 : 2;"),
            "{detail}"
        );
        assert!(detail.contains("invalid access to packet"), "{detail}");
        assert!(explained.hint.unwrap().contains("-v"));
    }
);

#[test]
fn usage_errors_exit_2_and_speak_json_when_asked() {
    let r = meshbpf(&["attach"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("<IFACE>"), "{r:?}");
    let j = meshbpf(&["-j", "attach", "eth0", "--mode", "hw"]);
    assert_eq!(j.code, 2, "{j:?}");
    assert!(
        j.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid value 'hw'"),
        "{j:?}"
    );
    // A missing argument is named in JSON too, not only on stderr.
    let missing = meshbpf(&["attach", "--lsm", "--enforce", "-j"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert_eq!(
        missing.json()["error"],
        "the following required arguments were not provided: --policy <POLICY.json>"
    );
    assert_eq!(meshbpf(&["frobnicate"]).code, 2);
    let help = meshbpf(&["attach", "--help"]).ok();
    assert!(
        help.stdout.contains("--mode <MODE>") && help.stdout.contains("There is no silent"),
        "{help:?}"
    );
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let status = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = meshbpf(&["completions", shell]).ok();
        assert!(
            r.stdout.contains("meshbpf") && r.stdout.contains("attach"),
            "{shell}: {r:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let r = meshbpf(&["man", dir.path().to_str().unwrap(), "-j"])
        .ok()
        .json();
    let written: Vec<&str> = r["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for page in [
        "meshbpf.1",
        "meshbpf-attach.1",
        "meshbpf-detach.1",
        "meshbpf-stats.1",
    ] {
        let path = dir.path().join(page);
        assert!(written.contains(&path.to_str().unwrap()), "{written:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

privileged_test!(
    fn stats_of_nothing_is_an_empty_array_or_a_clear_error() {
        let empty_root = format!("/sys/fs/bpf/meshbpf-empty-{}", std::process::id());
        let all = meshbpf(&["stats", "-j", "--bpffs", &empty_root]).ok();
        assert_eq!(all.json(), serde_json::json!([]));
        let human = meshbpf(&["stats", "--bpffs", &empty_root]).ok();
        assert!(
            human.stdout.contains("no meshbpf attachments under"),
            "{human:?}"
        );
        let one = meshbpf(&["stats", "lo", "-j", "--bpffs", &empty_root]);
        assert_eq!(one.code, 1);
        assert!(
            one.json()["error"]
                .as_str()
                .unwrap()
                .contains("nothing of meshbpf's is attached to lo"),
            "{one:?}"
        );
    }
);

privileged_test!(
    fn a_bad_class_file_fails_before_the_kernel_is_touched() {
        let net = VethPair::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("classes.json");
        std::fs::write(
            &file,
            r#"{"classes": {"bulk": {"mark": 1}}, "rules": [{"class": "bulk"}, {"class": "blk", "dport": 22}]}"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let r = net.meshbpf(&["attach", &net.dev, "--classes", path, "-j"]);
        assert_eq!(r.code, 1, "{r:?}");
        let err = r.json();
        assert_eq!(
            err["error"],
            format!("{path}: rule 1, field \"class\": no class is named \"blk\"").as_str()
        );
        assert_eq!(err["hint"], "the classes are bulk");
        assert!(!net.pin_dir().exists(), "nothing was attached");
        assert_eq!(net.xdp_prog_id(), None);
        assert_eq!(net.tc_program_count(), 0);

        let usage = net.meshbpf(&["attach", &net.dev, "--classes", path, "--no-flows"]);
        assert_eq!(usage.code, 2, "classes live in tc_classifier: {usage:?}");
        assert!(usage.stderr.contains("cannot be used with"), "{usage:?}");
    }
);

#[test]
fn a_flag_of_another_target_is_a_usage_error() {
    for args in [
        &["attach", "--latency", "--max-flows", "5"][..],
        &["attach", "--latency", "--filter", "f.json"],
        &["attach", "eth0", "--pid", "1"],
        &["attach", "eth0", "--latency"],
        &["attach", "--lsm", "--filter", "f.json"],
        &["attach", "--lsm", "--mode", "skb"],
        &["attach", "eth0", "--policy", "p.json"],
        &["attach", "--object", "x", "--classes", "c.json"],
        &["attach", "--object", "x", "--btf", "vmlinux"],
        &["attach", "--object", "x", "--comm", "c"],
        &["attach", "--latency", "--lsm"],
        &["detach", "--latency", "eth0"],
    ] {
        let r = meshbpf(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("cannot be used with"), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
        let j = meshbpf(&[args, &["-j"]].concat());
        assert_eq!(j.code, 2, "{args:?}: {j:?}");
        let err = j.json()["error"].as_str().unwrap().to_string();
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
    // The error names the flags given, not every flag of their target.
    let j = meshbpf(&["attach", "--latency", "--max-flows", "5", "-j"]);
    assert_eq!(
        j.json()["error"],
        "the argument '--latency' cannot be used with '--max-flows <N>'"
    );
}

#[test]
fn every_target_parses_with_all_its_flags() {
    // Each command line gets past clap and fails on its first check, before
    // any privilege is needed or the kernel is touched.
    let interface = meshbpf(&[
        "attach",
        "nosuchif0",
        "--mode",
        "skb",
        "--filter",
        "/nonexistent/rules.json",
        "--classes",
        "/nonexistent/classes.json",
        "--max-flows",
        "64",
        "--tc-method",
        "netlink",
        "--btf",
        "/nonexistent/vmlinux",
        "-j",
    ]);
    assert_eq!(interface.code, 1, "{interface:?}");
    let err = interface.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("/nonexistent/rules.json"), "{err}");

    let latency = meshbpf(&[
        "attach",
        "--latency",
        "--pid",
        "1",
        "--comm",
        "c",
        "--cgroup",
        "/nonexistent",
        "--method",
        "tp-btf",
        "--syscalls",
        "nosuchcall",
        "--btf",
        "/nonexistent/vmlinux",
        "-j",
    ]);
    assert_eq!(latency.code, 1, "{latency:?}");
    let err = latency.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("nosuchcall"), "{err}");

    let lsm = meshbpf(&[
        "attach",
        "--lsm",
        "--policy",
        "/nonexistent/policy.json",
        "--enforce",
        "--btf",
        "/nonexistent/vmlinux",
        "-j",
    ]);
    assert_eq!(lsm.code, 1, "{lsm:?}");
    let err = lsm.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("/nonexistent/policy.json"), "{err}");

    for target in [&["eth0"][..], &[]] {
        let mut args = vec!["attach"];
        args.extend_from_slice(target);
        args.extend(["--object", "no.such", "--prog", "p", "--mode", "skb", "-j"]);
        let object = meshbpf(&args);
        assert_eq!(object.code, 1, "{object:?}");
        assert_eq!(
            object.json()["error"],
            "'no.such' is not a valid object name",
            "{object:?}"
        );
    }

    let detach = meshbpf(&["detach", "a/b", "-j"]);
    assert_eq!(detach.code, 1, "{detach:?}");
    assert!(
        detach.json()["error"]
            .as_str()
            .unwrap()
            .contains("'a/b' is not a valid interface name"),
        "{detach:?}"
    );
}

#[test]
fn pid_zero_is_a_usage_error() {
    // A root that is no bpffs: were the pid accepted, nothing could attach.
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    for args in [
        &["attach", "--latency", "--pid", "0"][..],
        &["latency", "--pid", "0"],
        &["events", "--pid", "0"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--bpffs", root, "-j"]);
        let r = meshbpf(&all);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(
            r.json()["error"],
            "invalid value '0' for '--pid <PID>': 0 is not in 1..=4294967295",
            "{args:?}"
        );
    }
}
