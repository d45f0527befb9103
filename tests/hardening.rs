//! The hardened edge (issue 15, items 4, 6, 7 and 12): pin roots that do
//! not resolve onto a bpffs, pin roots another user made or can write,
//! input files that are not regular files or are too big, and what reaches
//! a terminal. Everything that mounts or plants a hostile root does so in a
//! private mount namespace, on a bpffs of its own.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{compile_fixture, in_private_mounts, meshbpf, PinRoot, Ran, BIN};
use serde_json::Value;

/// Enough for meshbpf's own needs, far too little for /dev/zero read to the
/// end: a test must not be able to take the machine's memory.
const MEMORY_LIMIT: &str = "--as=1073741824";

/// Runs the real binary under [`MEMORY_LIMIT`] and a deadline, so that a
/// blocking read or an unbounded one fails the test instead of hanging it
/// or waking the OOM killer.
fn limited(args: &[&str]) -> Ran {
    Ran::from(common::run(
        std::process::Command::new("timeout")
            .args(["20", "prlimit", MEMORY_LIMIT, "--", BIN])
            .args(args),
    ))
}

fn error_of(r: &Ran) -> String {
    r.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {r:?}"))
        .to_owned()
}

const RULES: &str = r#"{"default": "allow", "rules": [{"action": "deny", "src": "192.0.2.0/24"}]}"#;

/// The commands that read each kind of input file; `{}` is the file.
/// Each names a root that is no bpffs, so that nothing could attach.
const READERS: [(&str, &[&str]); 8] = [
    ("filter rules", &["filter", "check", "{}"]),
    ("filter rules", &["filter", "apply", "lo", "{}"]),
    ("filter rules", &["attach", "mbnone0", "--filter", "{}"]),
    ("QoS classes", &["attach", "mbnone0", "--classes", "{}"]),
    ("LSM policies", &["lsm", "check", "{}"]),
    ("LSM policies", &["attach", "--lsm", "--policy", "{}"]),
    ("LSM policies", &["lsm", "apply", "{}"]),
    ("BPF objects", &["load", "{}"]),
];

fn reader_args<'a>(template: &[&'a str], file: &'a str, root: &'a str) -> Vec<&'a str> {
    let mut args: Vec<&str> = template
        .iter()
        .map(|&arg| if arg == "{}" { file } else { arg })
        .collect();
    args.extend(["--bpffs", root, "-j"]);
    args
}

fn expected_refusal(kind: &str, file: &str, what: &str) -> String {
    let reason =
        format!("it is {what}, not a regular file; meshbpf reads {kind} only from regular files");
    if kind == "BPF objects" || kind == "BTF files" {
        format!("cannot read {file}: {reason}")
    } else {
        format!("{file}: cannot read it: {reason}")
    }
}

privileged_test!(
    /// /dev/zero, a FIFO without a writer and a directory are refused at
    /// once by every command that reads a file, under a memory limit and a
    /// deadline; so is a file over its kind's cap.
    fn input_files_must_be_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let root = root.to_str().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let fifo = fifo.to_str().unwrap();
        let directory = dir.path().to_str().unwrap();
        for (kind, template) in READERS {
            for (file, what) in [
                ("/dev/zero", "a character device"),
                (fifo, "a FIFO"),
                (directory, "a directory"),
            ] {
                let r = limited(&reader_args(template, file, root));
                assert_eq!(r.code, 1, "{template:?} {file}: {r:?}");
                assert_eq!(
                    error_of(&r),
                    expected_refusal(kind, file, what),
                    "{template:?}"
                );
                assert!(r.json()["hint"].is_string(), "{r:?}");
            }
        }
        assert!(!Path::new(root).exists());

        // Sparse: the size is what counts, not the disk it takes.
        let big = dir.path().join("big.json");
        fs::File::create(&big)
            .unwrap()
            .set_len(16 * 1024 * 1024 + 1)
            .unwrap();
        let r = limited(&["filter", "check", big.to_str().unwrap(), "-j"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            error_of(&r),
            format!(
                "{}: cannot read it: it is over the 16 MiB limit for filter rules (16777217 bytes)",
                big.display()
            )
        );
        let object = dir.path().join("big.bpf.o");
        fs::File::create(&object)
            .unwrap()
            .set_len(64 * 1024 * 1024 + 1)
            .unwrap();
        let r = limited(&["load", object.to_str().unwrap(), "--bpffs", root, "-j"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            error_of(&r),
            format!(
                "cannot read {}: it is over the 64 MiB limit for BPF objects (67108865 bytes)",
                object.display()
            )
        );
    }
);

privileged_test!(
    /// --btf takes only a regular file, and one libbpf can parse; the
    /// error names the file and why.
    fn a_bad_btf_file_is_named() {
        let root = PinRoot::new();
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let garbage = dir.path().join("vmlinux");
        fs::write(&garbage, b"not BTF at all\n").unwrap();
        let (_obj_dir, object) = compile_fixture("load_counter");
        let fifo = fifo.to_str().unwrap();
        let garbage = garbage.to_str().unwrap();
        for command in [
            vec!["attach", "--latency"],
            vec!["load", object.to_str().unwrap()],
        ] {
            for (file, expected) in [
                ("/dev/zero", expected_refusal("BTF files", "/dev/zero", "a character device")),
                (fifo, expected_refusal("BTF files", fifo, "a FIFO")),
                (garbage, format!("cannot use {garbage} as BTF: it is neither raw BTF nor an ELF object with a .BTF section (BPF object format invalid)")),
            ] {
                let mut args = command.clone();
                args.extend(["--btf", file, "--bpffs", root.path.to_str().unwrap(), "-j"]);
                let r = limited(&args);
                assert_eq!(r.code, 1, "{args:?}: {r:?}");
                assert_eq!(error_of(&r), expected, "{args:?}");
            }
        }
        assert!(root.loaded_entries().is_empty());
        assert!(!root.path.join("host").exists());
    }
);

/// Runs `script` in a private mount namespace on a fresh bpffs at
/// /sys/fs/bpf mounted with `options`, so nothing it plants or mounts is
/// seen outside.
fn on_fresh_bpffs(options: &str, script: &str) -> Ran {
    in_private_mounts(&format!(
        "mount -t bpf -o {options} bpf /sys/fs/bpf\n{script}"
    ))
}

privileged_test!(
    /// A --bpffs under /sys/fs/bpf whose real location is elsewhere (a
    /// symlink, `..`, another filesystem mounted below) never makes meshbpf
    /// mount a second bpffs over /sys/fs/bpf, which would hide every pin.
    fn a_root_off_the_bpffs_never_mounts_over_it() {
        let r = on_fresh_bpffs(
            "mode=0700",
            r#"mkdir /sys/fs/bpf/marker
            away=$(mktemp -d)
            ln -s "$away" /sys/fs/bpf/link
            mkdir /sys/fs/bpf/sub
            mount -t tmpfs tmpfs /sys/fs/bpf/sub
            before=$(grep -c ' /sys/fs/bpf bpf ' /proc/self/mounts)
            for root in /sys/fs/bpf/link/root "/sys/fs/bpf/../../..$away/root" /sys/fs/bpf/sub/root; do
                "$BIN" health --fix -j --bpffs "$root" || true
                echo
            done
            echo "mounts $before $(grep -c ' /sys/fs/bpf bpf ' /proc/self/mounts)"
            ls /sys/fs/bpf | grep -x marker
            echo "away $away""#,
        );
        assert_eq!(r.code, 0, "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.is_empty()).collect();
        let away = lines.last().unwrap().strip_prefix("away ").unwrap();
        let expected = [
            format!("pin root /sys/fs/bpf/link/root (it resolves to {away}/root) is not on a bpffs, so pins cannot be created there"),
            format!("pin root /sys/fs/bpf/../../..{away}/root (it resolves to {away}/root) is not on a bpffs, so pins cannot be created there"),
            "pin root /sys/fs/bpf/sub/root is not on a bpffs, so pins cannot be created there".to_owned(),
        ];
        for (line, expected) in lines.iter().zip(&expected) {
            let report: Value = serde_json::from_str(line).unwrap();
            let fix = report["fixes"]
                .as_array()
                .and_then(|fixes| fixes.iter().find(|f| f["action"] == "mount_bpffs"))
                .unwrap_or_else(|| panic!("no mount_bpffs fix in {report}"));
            assert_eq!(fix["done"], false, "{fix}");
            assert_eq!(fix["detail"], expected.as_str(), "{fix}");
        }
        let mounts = lines[expected.len()];
        let counts: Vec<&str> = mounts.split(' ').skip(1).collect();
        assert_eq!(
            counts[0], counts[1],
            "a bpffs was mounted over /sys/fs/bpf: {r:?}"
        );
        assert_eq!(lines[expected.len() + 1], "marker", "{r:?}");
    }
);

privileged_test!(
    /// A root that is no bpffs is never created, wherever it is.
    fn a_root_off_the_bpffs_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.json");
        fs::write(&rules, RULES).unwrap();
        let root: PathBuf = dir.path().join("etc/meshbpf");
        for command in [
            vec!["filter", "apply", "lo", rules.to_str().unwrap()],
            vec!["filter", "remove", "lo"],
        ] {
            let mut args = command.clone();
            args.extend(["--bpffs", root.to_str().unwrap(), "-j"]);
            let r = meshbpf(&args);
            assert_eq!(r.code, 1, "{args:?}: {r:?}");
            assert_eq!(
                error_of(&r),
                format!(
                    "pin root {} is not on a bpffs, so meshbpf keeps no state there and creates nothing",
                    root.display()
                )
            );
            assert!(!dir.path().join("etc").exists(), "{args:?} created it");
        }
    }
);

const FOREIGN_ROOT: &str = "refusing the pin root /sys/fs/bpf/meshbpf: it is owned by uid 65534, so another user could plant, rename or lock meshbpf's state";

privileged_test!(
    /// On a bpffs mounted with default options (mode 1777) another user can
    /// create meshbpf's root first, or lock it: meshbpf refuses such a root
    /// at once (and never blocks on its lock), and creates its own 0700.
    fn a_root_another_user_made_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.json");
        fs::write(&rules, RULES).unwrap();
        let r = on_fresh_bpffs(
            "mode=1777",
            &format!(
                r#"nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }}
                nobody mkdir /sys/fs/bpf/meshbpf
                for command in "detach lo" "list" "filter apply lo {rules}"; do
                    timeout 10 "$BIN" $command -j || echo "exit $?"
                done
                setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c 'import fcntl, os, sys, time
fd = os.open("/sys/fs/bpf/meshbpf", os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)' > {locked} 2>&1 &
                for i in $(seq 200); do grep -q locked {locked} && break; sleep 0.05; done
                grep locked {locked}
                timeout 10 "$BIN" list -j || echo "exit $?"
                kill $!
                rmdir /sys/fs/bpf/meshbpf
                mkdir -m 0777 /sys/fs/bpf/meshbpf
                timeout 10 "$BIN" detach lo -j || echo "exit $?"
                rmdir /sys/fs/bpf/meshbpf
                "$BIN" filter apply lo {rules} -j || echo "exit $?"
                stat -c '%a %u' /sys/fs/bpf/meshbpf"#,
                rules = rules.display(),
                locked = dir.path().join("locked").display(),
            ),
        );
        assert_eq!(r.code, 0, "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        let error = |line: &str| -> String {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            value["error"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(lines[6], "locked", "{r:?}");
        for i in [0, 2, 4, 7] {
            assert_eq!(error(lines[i]), FOREIGN_ROOT, "{r:?}");
            assert_eq!(lines[i + 1], "exit 1", "{r:?}");
        }
        assert_eq!(
            error(lines[9]),
            "refusing the pin root /sys/fs/bpf/meshbpf: it is writable by other users (mode 777), so another user could plant, rename or lock meshbpf's state",
            "{r:?}"
        );
        assert_eq!(lines[10], "exit 1");
        // No filter is attached to lo: the apply fails, after making the
        // root only root may enter.
        assert_eq!(lines[12], "exit 1", "{r:?}");
        assert_eq!(lines[13], "700 0", "{r:?}");
    }
);

#[test]
fn control_characters_never_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    fs::write(
        &rules,
        r#"{"default": "allow", "rules": [{"action": "deny", "\u001b[2J\u0007": 1}]}"#,
    )
    .unwrap();
    let human = meshbpf(&["filter", "check", rules.to_str().unwrap()]);
    assert_eq!(human.code, 1, "{human:?}");
    assert!(!human.stderr.contains('\x1b'), "{human:?}");
    assert!(
        human
            .stderr
            .contains(r#"field "\u{1b}[2J\u{7}": not a known field"#),
        "{human:?}"
    );
    let json = meshbpf(&["filter", "check", rules.to_str().unwrap(), "-j"]);
    assert!(!json.stdout.contains('\x1b'), "{json:?}");
    assert_eq!(
        error_of(&json),
        format!(
            "{}: rule 0, field \"\x1b[2J\x07\": not a known field",
            rules.display()
        )
    );
}

#[test]
fn ipv4_mapped_ranges_warn_in_filters_and_are_refused_in_classes() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("filter.json");
    fs::write(
        &filter,
        r#"{"default": "allow", "rules": [{"action": "deny", "src": "::ffff:10.0.0.0/104"}]}"#,
    )
    .unwrap();
    let problem = "::ffff:10.0.0.0/104 is an IPv4-mapped IPv6 range: it matches only IPv6 packets carrying such addresses (never sent by a conforming host), not IPv4 traffic from 10.0.0.0/8; write 10.0.0.0/8 for that";
    let checked = meshbpf(&["filter", "check", filter.to_str().unwrap(), "-j"]).ok();
    assert_eq!(
        checked.json()["warnings"],
        serde_json::json!([format!("rule 0, field \"src\": {problem}")])
    );
    let classes = dir.path().join("classes.json");
    fs::write(
        &classes,
        r#"{"classes": {"bulk": {"mark": 1}}, "rules": [{"class": "bulk", "src": "::ffff:10.0.0.0/104"}]}"#,
    )
    .unwrap();
    let refused = meshbpf(&[
        "attach",
        "mbnone0",
        "--classes",
        classes.to_str().unwrap(),
        "-j",
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(
        error_of(&refused),
        format!("{}: rule 0, field \"src\": {problem}", classes.display())
    );
}

#[test]
fn the_lockout_check_covers_sudo_su_sshd_and_the_root_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let check = |text: &str, root: &str| -> Ran {
        fs::write(&policy, text).unwrap();
        meshbpf(&[
            "lsm",
            "check",
            policy.to_str().unwrap(),
            "--enforce",
            "--bpffs",
            root,
            "-j",
        ])
    };
    let other = "/sys/fs/bpf/mbother";
    let r = check(r#"{"deny": {"write": ["/sys/fs/bpf/mbother"]}}"#, other);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        error_of(&r).contains("denies write of /sys/fs/bpf/mbother (meshbpf's bpffs root)"),
        "{r:?}"
    );
    // The default root is not in use, so denying it locks nobody out.
    check(r#"{"deny": {"write": ["/sys/fs/bpf/meshbpf"]}}"#, other).ok();

    let installed: Vec<(&str, PathBuf)> = ["sudo", "su", "sshd"]
        .into_iter()
        .filter_map(|name| {
            ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .find_map(|dir| fs::canonicalize(Path::new(dir).join(name)).ok())
                .map(|path| (name, path))
        })
        .collect();
    assert!(!installed.is_empty(), "none of sudo, su, sshd is installed");
    for (name, path) in installed {
        let r = check(
            &format!(r#"{{"deny": {{"exec": ["{}"]}}}}"#, path.display()),
            other,
        );
        assert_eq!(r.code, 1, "{name}: {r:?}");
        assert!(
            error_of(&r).contains(&format!("denies exec of {} ({name})", path.display())),
            "{r:?}"
        );
    }
}
