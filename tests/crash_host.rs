//! Crash consistency of the host-wide commands: attach/detach --latency,
//! attach/detach --lsm, load and unload, killed at every bpf, pin, mkdir,
//! rename and unlink syscall of an uninterrupted run.
//!
//! The kill points come from strace of that run, never from a hard-coded
//! count: for every syscall name and every call of it, the command runs
//! again under `strace -e inject=NAME:signal=KILL:when=N`. After each kill,
//! judged by the pins under the root and bpftool's list of links (not by
//! meshbpf):
//! - a state that is neither the old nor the new one is named by `health`
//!   ("interrupted ...");
//! - after `health --fix` the state is the old or the new one;
//! - no link of meshbpf's programs runs without a pin;
//! - from the old state the command succeeds again, and reaches the new one;
//! - the command run straight after the kill (the next command) reaches the
//!   new state too.
//!
//! By default every second kill point is tried (a few minutes in all);
//! MESHBPF_CRASH_ALL=1 tries every one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{compile_fixture, run, wait_for, PinRoot, BIN};
use serde_json::Value;

/// The syscalls a kill can land on: every bpf(2) call (loads, links, pins)
/// and every change of the pin tree.
const SYSCALLS: [&str; 9] = [
    "bpf",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
];

/// The programs of each scenario whose links must never run unpinned.
const LATENCY_PROGRAMS: &[&str] = &[
    "lat_enter_btf",
    "lat_exit_btf",
    "lat_enter_raw",
    "lat_exit_raw",
];
const LSM_PROGRAMS: &[&str] = &[
    "tp_exec",
    "tp_sys_enter",
    "lsm_open",
    "lsm_exec",
    "lsm_ptrace",
    "lsm_capable",
    "lsm_read_file",
    "lsm_load_data",
    "lsm_mod_request",
];
const OBJECT_PROGRAMS: &[&str] = &["raw_getppid", "tp_getppid", "btf_getppid"];
const OBJECT: &str = "crashobj";

/// What is there: every pin and directory under the root (the empty
/// top-level containers aside), and the program each pinned link runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct State {
    pins: BTreeSet<String>,
    running: BTreeSet<String>,
}

fn walk(dir: &Path, base: &Path, into: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        if path.is_dir() {
            walk(&path, base, into);
            let container = ["host", "loaded", "net"].contains(&rel.as_str());
            if !container || fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
                into.insert(format!("{rel}/"));
            }
        } else {
            into.insert(rel);
        }
    }
}

/// bpftool's JSON; a listing fails when an object or pin it walks goes away
/// meanwhile (other tests run too), so it is tried again.
fn bpftool(args: &[&str]) -> Value {
    let listed = wait_for(Duration::from_secs(5), || {
        let out = run(Command::new("bpftool").args(args));
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    });
    listed.unwrap_or_else(|| panic!("bpftool {args:?} kept failing"))
}

/// Every link the kernel has: its program's name and where it is pinned.
fn links() -> Vec<(String, Vec<String>)> {
    let names: BTreeMap<u64, String> = bpftool(&["-j", "prog", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    bpftool(&["-f", "-j", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let prog = names
                .get(&l["prog_id"].as_u64().unwrap_or(0))
                .cloned()
                .unwrap_or_default();
            let pinned = l["pinned"]
                .as_array()
                .map(|p| p.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (prog, pinned)
        })
        .collect()
}

fn state(root: &PinRoot) -> State {
    let mut pins = BTreeSet::new();
    walk(&root.path, &root.path, &mut pins);
    let mut running = BTreeSet::new();
    for (prog, pinned) in links() {
        for pin in pinned {
            if let Ok(rel) = Path::new(&pin).strip_prefix(&root.path) {
                running.insert(format!("{}={prog}", rel.display()));
            }
        }
    }
    State { pins, running }
}

/// Links of `programs` that nothing pins: the one state nothing can
/// recover. A link another test holds for a moment is not one: a leak
/// stays.
fn leaks(programs: &[&str]) -> Vec<String> {
    let find = || -> Vec<String> {
        links()
            .into_iter()
            .filter(|(prog, pinned)| programs.contains(&prog.as_str()) && pinned.is_empty())
            .map(|(prog, _)| prog)
            .collect()
    };
    let settled = wait_for(Duration::from_secs(3), || {
        let found = find();
        found.is_empty().then_some(())
    });
    match settled {
        Some(()) => Vec::new(),
        None => find(),
    }
}

struct Scenario {
    name: &'static str,
    /// The command, without --bpffs.
    command: Vec<String>,
    /// Brings an empty root to the state before the command.
    setup: Vec<Vec<String>>,
    programs: &'static [&'static str],
    /// What `health` calls the leftover: the program or object name.
    subject: &'static str,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn meshbpf(root: &PinRoot, args: &[String]) -> common::Ran {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    root.meshbpf(&args)
}

/// Detaches, unloads and fixes whatever is there, then removes the root.
fn reset(root: &PinRoot) {
    for args in [&["detach", "--latency"][..], &["detach", "--lsm"]] {
        root.meshbpf(args);
    }
    for name in root.loaded_entries() {
        root.meshbpf(&["unload", &name]);
    }
    root.meshbpf(&["health", "--fix", "-j"]);
    let _ = fs::remove_dir_all(&root.path);
    assert!(
        !root.path.exists(),
        "the root could not be emptied: {:?}",
        state(root)
    );
}

fn prepare(root: &PinRoot, scenario: &Scenario) -> State {
    reset(root);
    for step in &scenario.setup {
        meshbpf(root, step).ok();
    }
    state(root)
}

/// The kill points of an uninterrupted run: (syscall, how many calls of it).
fn traced_calls(root: &PinRoot, scenario: &Scenario) -> Vec<(String, usize)> {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let out = run(Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(trace.path())
        .arg("-e")
        .arg(format!("trace={}", SYSCALLS.join(",")))
        .arg(BIN)
        .args(
            root.args(
                &scenario
                    .command
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
        ));
    assert!(
        out.status.success(),
        "{}: the uninterrupted run failed: {}",
        scenario.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in fs::read_to_string(trace.path()).unwrap().lines() {
        if line.contains("resumed>") {
            continue;
        }
        let call = line.split_whitespace().nth(1).unwrap_or("");
        if let Some((name, _)) = call.split_once('(') {
            *counts.entry(name.to_string()).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

/// Runs the command, killed at the `n`th call of `syscall`; false when it
/// ended on its own (that run made fewer calls).
fn killed_at(root: &PinRoot, scenario: &Scenario, syscall: &str, n: usize) -> bool {
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal=KILL:when={n}"))
        .arg(BIN)
        .args(
            root.args(
                &scenario
                    .command
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running strace");
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL) || status.code() == Some(128 + libc::SIGKILL)
}

/// Whether `health` names a leftover of `subject` as an interrupted command,
/// and says so when a program of it still runs.
fn health_names(root: &PinRoot, subject: &str, runs: bool) -> bool {
    let report = root.meshbpf(&["health", "-j"]).json();
    report["checks"].as_array().unwrap().iter().any(|c| {
        let detail = c["detail"].as_str().unwrap_or("");
        c["status"] != "ok"
            && detail.contains("interrupted")
            && detail.contains(subject)
            && (!runs || detail.contains("running"))
    })
}

#[derive(Debug, Default)]
struct Figures {
    kills: usize,
    neither: usize,
    unnamed: usize,
    neither_after_fix: usize,
    leaks: usize,
    unrecoverable: usize,
    next_command_failed: usize,
}

fn crash(scenario: Scenario) {
    let root = PinRoot::new();
    let old = prepare(&root, &scenario);
    let calls = traced_calls(&root, &scenario);
    let new = state(&root);
    assert_ne!(old, new, "{}: the command changed nothing", scenario.name);
    assert!(leaks(scenario.programs).is_empty(), "{}", scenario.name);
    let every = if std::env::var("MESHBPF_CRASH_ALL").as_deref() == Ok("1") {
        1
    } else {
        2
    };
    let mut figures = Figures::default();
    let mut problems = Vec::new();
    let points: Vec<(String, usize)> = calls
        .iter()
        .flat_map(|(name, count)| (1..=*count).map(move |n| (name.clone(), n)))
        .collect();
    for (i, (syscall, n)) in points.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let at = format!("{} killed at {syscall} #{n}", scenario.name);
        // The next command is the same command once more.
        assert_eq!(prepare(&root, &scenario), old, "{at}: setup");
        if !killed_at(&root, &scenario, syscall, *n) {
            continue;
        }
        figures.kills += 1;
        let killed = state(&root);
        let leaked = leaks(scenario.programs);
        if !leaked.is_empty() {
            figures.leaks += 1;
            problems.push(format!("{at}: links run without a pin: {leaked:?}"));
        }
        let next = (killed != new).then(|| meshbpf(&root, &scenario.command));
        if next
            .as_ref()
            .is_some_and(|next| next.code != 0 || state(&root) != new)
        {
            figures.next_command_failed += 1;
            problems.push(format!(
                "{at}: the next command did not finish: {next:?}, {:?}",
                state(&root)
            ));
        }

        // The same kill once more, now followed by health and --fix.
        assert_eq!(prepare(&root, &scenario), old, "{at}: setup");
        if !killed_at(&root, &scenario, syscall, *n) {
            continue;
        }
        let killed_again = state(&root);
        if killed_again != old && killed_again != new {
            figures.neither += 1;
            let runs = !killed_again.running.is_empty();
            if !health_names(&root, scenario.subject, runs) {
                figures.unnamed += 1;
                problems.push(format!(
                    "{at}: health does not name what is left: {killed_again:?}"
                ));
            }
        }
        let fixed = root.meshbpf(&["health", "--fix", "-j"]);
        let after_fix = state(&root);
        if after_fix != old && after_fix != new {
            figures.neither_after_fix += 1;
            problems.push(format!(
                "{at}: after health --fix neither old nor new: {after_fix:?}; fixes: {}",
                fixed.json()["fixes"]
            ));
        }
        if !leaks(scenario.programs).is_empty() {
            figures.leaks += 1;
            problems.push(format!("{at}: links run without a pin after --fix"));
        }
        if after_fix == old {
            let again = meshbpf(&root, &scenario.command);
            if again.code != 0 || state(&root) != new {
                figures.unrecoverable += 1;
                problems.push(format!(
                    "{at}: after --fix the command fails: {again:?}, {:?}",
                    state(&root)
                ));
            }
        }
    }
    reset(&root);
    eprintln!(
        "{}: {} kill points, {figures:?}",
        scenario.name,
        points.len()
    );
    assert!(figures.kills > 0, "{}: no kill landed", scenario.name);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn object() -> (tempfile::TempDir, PathBuf) {
    compile_fixture("load_trace")
}

privileged_test!(
    fn attach_latency_survives_a_kill_at_every_syscall() {
        crash(Scenario {
            name: "attach --latency",
            command: strings(&["attach", "--latency", "-j"]),
            setup: Vec::new(),
            programs: LATENCY_PROGRAMS,
            subject: "syscall_latency",
        });
    }
);

privileged_test!(
    fn detach_latency_survives_a_kill_at_every_syscall() {
        crash(Scenario {
            name: "detach --latency",
            command: strings(&["detach", "--latency", "-j"]),
            setup: vec![strings(&["attach", "--latency", "-j"])],
            programs: LATENCY_PROGRAMS,
            subject: "syscall_latency",
        });
    }
);

privileged_test!(
    fn attach_lsm_survives_a_kill_at_every_syscall() {
        crash(Scenario {
            name: "attach --lsm",
            command: strings(&["attach", "--lsm", "-j"]),
            setup: Vec::new(),
            programs: LSM_PROGRAMS,
            subject: "lsm_monitor",
        });
    }
);

privileged_test!(
    fn detach_lsm_survives_a_kill_at_every_syscall() {
        crash(Scenario {
            name: "detach --lsm",
            command: strings(&["detach", "--lsm", "-j"]),
            setup: vec![strings(&["attach", "--lsm", "-j"])],
            programs: LSM_PROGRAMS,
            subject: "lsm_monitor",
        });
    }
);

privileged_test!(
    fn load_survives_a_kill_at_every_syscall() {
        let (_dir, obj) = object();
        let obj = obj.to_str().unwrap();
        crash(Scenario {
            name: "load",
            command: strings(&["load", obj, "--name", OBJECT, "-j"]),
            setup: Vec::new(),
            programs: OBJECT_PROGRAMS,
            subject: OBJECT,
        });
    }
);

privileged_test!(
    fn unload_survives_a_kill_at_every_syscall() {
        let (_dir, obj) = object();
        let obj = obj.to_str().unwrap();
        crash(Scenario {
            name: "unload",
            command: strings(&["unload", OBJECT, "-j"]),
            setup: vec![
                strings(&["load", obj, "--name", OBJECT, "-j"]),
                strings(&["attach", "--object", OBJECT, "--prog", "raw_getppid", "-j"]),
            ],
            programs: OBJECT_PROGRAMS,
            subject: OBJECT,
        });
    }
);
