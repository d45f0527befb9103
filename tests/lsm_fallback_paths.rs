//! How lsm_monitor's tracepoint fallback names files: an open's file as
//! the kernel opened it (through `//`, `.`, `..`, relative names, directory
//! descriptors and symbolic links) with the syscall's result, a failed open
//! by its name made absolute, and an exec by both its name and the file
//! the kernel runs (execveat/fexecve included). The last test compares a
//! seeded workload's opens with what strace saw of the same syscalls.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use common::monitor::Monitor;
use common::rng::XorShift;

/// Runs `python3 -I -c SCRIPT ARGS` (isolated: nothing is imported from the
/// working directory) to its end; its pid and stdout.
fn python(script: &str, args: &[&str]) -> (u32, String) {
    let child = Command::new("python3")
        .args(["-I", "-c", script])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("running python3");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed: {out:?}");
    (pid, String::from_utf8(out.stdout).unwrap())
}

fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

/// (path, verdict) of each exec event of `pid`.
fn execs(monitor: &Monitor, pid: u32) -> Vec<(String, String)> {
    let (events, _) = monitor.events(&["--type", "exec", "--pid", &pid.to_string()]);
    events
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Forks a child that execs `argv[1]` as `how` says (`fexecve`: through a
/// descriptor, `execveat`: relative to a directory descriptor, `path`: by
/// the name as given) from working directory `argv[2]`; prints its pid.
const EXEC: &str = r#"
import os, sys
how, target, cwd = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(cwd)
pid = os.fork()
if pid == 0:
    if how == "fexecve":
        os.execve(os.open(target, os.O_RDONLY), ["t"], {})
    elif how == "execveat":
        d = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"t", None)
        libc.execveat(d, os.path.basename(target).encode(), argv, None, 0)
        os._exit(127)
    else:
        os.execve(target, ["t"], {})
_, status = os.waitpid(pid, 0)
assert status == 0, status
print(pid)
"#;

privileged_test!(
    fn an_exec_is_checked_by_its_name_and_by_the_file_the_kernel_runs() {
        let monitor = Monitor::with_policy(|dir| json!({ "deny": { "exec": [dir] } }));
        let dir = real(monitor.watched.path());
        let binary = dir.join("t");
        std::fs::copy("/bin/true", &binary).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().join("innocent");
        std::os::unix::fs::symlink(&binary, &link).unwrap();
        let dir_text = dir.to_str().unwrap();
        let denied = binary.to_str().unwrap().to_string();

        for (how, target, cwd) in [
            ("path", denied.clone(), "/"),
            ("path", "./t".to_string(), dir_text),
            ("path", format!("{dir_text}//./t"), "/"),
            (
                "path",
                format!(
                    "{dir_text}/../{}/t",
                    dir.file_name().unwrap().to_str().unwrap()
                ),
                "/",
            ),
            ("path", link.to_str().unwrap().to_string(), "/"),
            ("fexecve", denied.clone(), "/"),
            ("execveat", denied.clone(), "/"),
        ] {
            let (_, out) = python(EXEC, &[how, &target, cwd]);
            let child: u32 = out.trim().parse().unwrap();
            assert_eq!(
                execs(&monitor, child),
                [(denied.clone(), "audit".to_string())],
                "exec {how} {target} from {cwd}"
            );
        }
        let (_, out) = python(EXEC, &["path", "/bin/true", "/"]);
        let child: u32 = out.trim().parse().unwrap();
        assert_eq!(
            execs(&monitor, child),
            [("/bin/true".to_string(), "allowed".to_string())]
        );
    }
);

/// Opens what argv[2:] names (`NAME` read-only, `w:NAME` for writing with
/// O_CREAT, `d:DIR:NAME` relative to a descriptor of DIR) from working
/// directory argv[1], ignoring failures.
const OPENS: &str = r#"
import os, sys
os.chdir(sys.argv[1])
for spec in sys.argv[2:]:
    dir_fd, flags = None, os.O_RDONLY
    if spec.startswith("w:"):
        spec, flags = spec[2:], os.O_WRONLY | os.O_CREAT
    elif spec.startswith("d:"):
        _, d, spec = spec.split(":", 2)
        dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(os.open(spec, flags, 0o644, dir_fd=dir_fd))
    except OSError:
        pass
    if dir_fd is not None:
        os.close(dir_fd)
"#;

/// (path, result, access, verdict) of each open event, in order.
fn opens(events: &[Value]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_string();
            (
                field("path"),
                field("result"),
                field("access"),
                field("verdict"),
            )
        })
        .collect()
}

privileged_test!(
    fn opens_name_the_file_the_kernel_opened_and_failures_their_result() {
        let monitor = Monitor::with_policy(
            |dir| json!({ "watch": [dir], "deny": { "write": [dir.join("ro")] } }),
        );
        let dir = real(monitor.watched.path());
        let d = dir.to_str().unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::create_dir(dir.join("ro")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().join("link");
        std::os::unix::fs::symlink(dir.join("f"), &link).unwrap();
        let specs = [
            format!("{d}//f"),
            format!("{d}/./f"),
            "f".to_string(),
            format!("d:{d}:f"),
            format!("{d}/sub/../f"),
            link.to_str().unwrap().to_string(),
            format!("{d}/missing"),
            "sub/../../missing-too".to_string(),
            format!("w:{d}//ro/./new"),
            "/etc/hostname".to_string(),
        ];
        let args: Vec<&str> = std::iter::once(d)
            .chain(specs.iter().map(String::as_str))
            .collect();
        let (pid, _) = python(OPENS, &args);

        let (events, _) = monitor.events(&["--type", "open", "--pid", &pid.to_string()]);
        for event in &events {
            assert_eq!(event["hook"], "sys_exit", "{event}");
        }
        let row = |path: String, result: &str, access: &str, verdict: &str| {
            (
                path,
                result.to_string(),
                access.to_string(),
                verdict.to_string(),
            )
        };
        let f = format!("{d}/f");
        let parent = dir.parent().unwrap().to_str().unwrap();
        assert_eq!(
            opens(&events),
            [
                row(f.clone(), "ok", "read", "allowed"),
                row(f.clone(), "ok", "read", "allowed"),
                row(f.clone(), "ok", "read", "allowed"),
                // The descriptor of the directory is an open under it too.
                row(d.to_string(), "ok", "read", "allowed"),
                row(f.clone(), "ok", "read", "allowed"),
                row(f.clone(), "ok", "read", "allowed"),
                row(f.clone(), "ok", "read", "allowed"),
                row(format!("{d}/missing"), "ENOENT", "read", "allowed"),
                row(format!("{d}/ro/new"), "ok", "write", "audit"),
            ],
            "{events:#?}"
        );
        // Resolved against the working directory, the name leaves it.
        assert!(!events
            .iter()
            .any(|e| e["path"] == format!("{parent}/missing-too")));
    }
);

/// Lexical normalisation of an absolute path, written apart from meshbpf's.
fn normalise(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            name => kept.push(name),
        }
    }
    format!("/{}", kept.join("/"))
}

/// The open syscalls of an `strace -f -y` log whose file is under `dir`:
/// path and result (`ok` or the errno's name), counted. A failed open's
/// path is its name made absolute against its directory descriptor, or
/// `cwd` for AT_FDCWD.
fn strace_opens(log: &str, dir: &str, cwd: &str) -> BTreeMap<(String, String), u32> {
    let mut seen = BTreeMap::new();
    for line in log.lines() {
        let Some(call) = line.split_once(' ').map(|(_, rest)| rest.trim_start()) else {
            continue;
        };
        let Some(args) = call.strip_prefix("openat(") else {
            continue;
        };
        let (base, rest) = if let Some(rest) = args.strip_prefix("AT_FDCWD, ") {
            (cwd.to_string(), rest)
        } else {
            let open = args.find('<').unwrap();
            let close = args.find(">, ").unwrap();
            (args[open + 1..close].to_string(), &args[close + 3..])
        };
        let name = &rest[1..rest[1..].find('"').unwrap() + 1];
        // A call strace split around another process's is not an open of
        // the workload, which runs alone.
        let Some((_, ret)) = rest.rsplit_once(") = ") else {
            continue;
        };
        let (path, result) = if let Some(errno) = ret.strip_prefix("-1 ") {
            let joined = if name.starts_with('/') {
                name.to_string()
            } else {
                format!("{base}/{name}")
            };
            (
                normalise(&joined),
                errno.split(' ').next().unwrap().to_string(),
            )
        } else {
            let open = ret.find('<').unwrap();
            (ret[open + 1..ret.len() - 1].to_string(), "ok".to_string())
        };
        if path == dir || path.starts_with(&format!("{dir}/")) {
            *seen.entry((path, result)).or_insert(0) += 1;
        }
    }
    seen
}

privileged_test!(
    fn a_seeded_workload_has_the_opens_strace_saw() {
        let monitor = Monitor::attach();
        let dir = real(monitor.watched.path());
        let d = dir.to_str().unwrap().to_string();
        for sub in ["a", "a/b", "c"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        for file in ["f", "a/g", "a/b/h", "c/i"] {
            std::fs::write(dir.join(file), b"x").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().join("to-a");
        std::os::unix::fs::symlink(dir.join("a"), &link).unwrap();
        let link = link.to_str().unwrap().to_string();

        let parts = ["a", "b", "c", "f", "g", "h", "i", ".", "..", "", "nope"];
        let mut rng = XorShift(0x5eed_0017);
        let specs: Vec<String> = (0..300)
            .map(|_| {
                let depth = 1 + rng.below(4);
                let name: Vec<&str> = (0..depth).map(|_| rng.pick(&parts)).collect();
                let name = name.join("/");
                match rng.below(6) {
                    0 => format!("{d}/{name}"),
                    1 => format!("d:{d}/a:{name}"),
                    2 => format!("{link}/{name}"),
                    3 => format!("w:{d}/c/{name}"),
                    _ => name,
                }
            })
            .collect();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut args = vec![
            "-f".to_string(),
            "-qq".to_string(),
            "-y".to_string(),
            "-e".to_string(),
            "trace=openat".to_string(),
            "-o".to_string(),
            log.path().to_str().unwrap().to_string(),
            "python3".to_string(),
            "-I".to_string(),
            "-c".to_string(),
            OPENS.to_string(),
            d.clone(),
        ];
        args.extend(specs);
        let status = Command::new("strace")
            .args(&args)
            .status()
            .expect("running strace");
        assert!(status.success());

        let expected = strace_opens(&std::fs::read_to_string(log.path()).unwrap(), &d, &d);
        let (events, summary) = monitor.events(&["--type", "open"]);
        assert_eq!(summary["lost"], 0, "{summary}");
        let mut got = BTreeMap::new();
        for event in events.iter().filter(|e| e["comm"] == "python3") {
            let key = (
                event["path"].as_str().unwrap().to_string(),
                event["result"].as_str().unwrap().to_string(),
            );
            *got.entry(key).or_insert(0) += 1;
        }
        assert!(expected.len() > 20, "{expected:?}");
        assert!(expected.keys().any(|(_, r)| r == "ENOENT"), "{expected:?}");
        assert_eq!(got, expected);
    }
);
