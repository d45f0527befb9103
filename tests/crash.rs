//! Crash consistency: each mutating command is killed (SIGKILL from
//! strace) at every bpf, pin-tree and netlink syscall it makes, and what it
//! leaves is judged by an oracle that does not ask meshbpf
//! (tests/common/kstate.rs: the pins as the kernel names them, what runs on
//! the interface and how it judges probe frames).
//!
//! A family is a starting state "old" (built from a clean slate by real
//! commands), a command, and the state "new" the command makes when it runs
//! to the end. The kill points come from one uninterrupted run under
//! `strace -f`: for each traced syscall S called K times (by one tracee;
//! strace counts per syscall and per tracee), points S:1..=K, the command
//! being killed on entry to that call. After each kill:
//! 1. when the state is neither old nor new, `health -j` must name something
//!    (not every check ok), and say that it runs when a leftover still runs
//!    a program (a live link pin, or a program on the interface, that
//!    neither old nor new has);
//! 2. after `health --fix`, the state is old or new;
//! 3. no program runs without a pin: on the interface, every program is kept
//!    by a pin under the root; host-wide, no link made since the kill point
//!    and running one of the family's programs, loaded while the killed
//!    command lived, outlives it without a pin (right after the kill and
//!    after the fix);
//! 4. nothing is unrecoverable: when the state is not new yet, the command
//!    run again succeeds and makes it new.
//!
//! Each point is killed twice: once recovered by `health --fix` as above,
//! once by the next command alone (the same command run right after the
//! kill must succeed and make the state new, with no program left running
//! without a pin).
//!
//! Without MESHBPF_CRASH_ALL=1 (`make test-crash`) each family runs an
//! evenly spread sample of its points, the first and last among them
//! (MESHBPF_CRASH_SAMPLE points, 12 by default), so that `cargo test` stays
//! within minutes; MESHBPF_CRASH_POINTS=bpf:94,unlink:3 runs just those. Each family prints its table row to stderr and to
//! $CARGO_TARGET_TMPDIR/crash-<family>.txt, and fails with every violation
//! listed: syscall, N, invariant, the state against old and new.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::kstate::{self, State};
use common::{compile_fixture, run, PinRoot, Ran, VethPair, BIN};

/// The syscalls a kill lands on: bpf (programs, maps, links, pins), the
/// pin tree's own changes, and netlink.
const TRACED: &[&str] = &[
    "bpf",
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "sendmsg",
    "sendto",
];

/// Told apart by kstate's probe frames (UDP from 10.9.9.9, TCP to port 22
/// from 10.1.2.3, UDP to 5001 from the peer): R1 drops, drops, passes; R2
/// drops, passes, passes; xdp_counter passes all three.
const RULES_1: &str = r#"{"default": "allow", "rules": [{"action": "deny", "src": "10.0.0.0/8"}]}"#;
const RULES_2: &str = r#"{"default": "deny", "rules": [
    {"action": "allow", "src": "10.1.0.0/16", "protocol": "tcp", "dport": 22},
    {"action": "allow", "protocol": "udp", "dport": 5001}]}"#;
/// Bans both sources R2 lets in (10.1.2.3's CIDR and the peer's): CIDRs
/// shorter than a host go into the trie one write each, so a kill between
/// them would show, and a host beside them.
const BANS: &str = "10.1.0.0/16\n192.0.2.0/24\n10.9.9.9\n";
/// The third probe frame gets priority 1:10.
const CLASSES: &str = r#"{"classes": {"fast": {"priority": "1:10"}}, "rules": [{"class": "fast", "protocol": "udp", "dport": 5001}]}"#;

/// Arguments name `{IF}` (the test interface), `{R1}`, `{R2}`, `{C}`, `{B}`
/// (the files above) and `{OBJ}` (a compiled load_counter fixture); every
/// command gets `--bpffs` the family's own root.
type Args = &'static [&'static str];

struct Family {
    name: &'static str,
    /// Runs in a veth pair's namespace, on its interface.
    net: bool,
    /// From a clean slate to "old".
    setup: &'static [Args],
    /// The command that is killed; run to the end, it makes "new".
    command: Args,
    /// From any state meshbpf can repair back to the clean slate.
    clean: &'static [Args],
}

const DETACH_IF: &[Args] = &[&["detach", "{IF}"]];

#[derive(Debug)]
struct Violation {
    syscall: String,
    n: u32,
    invariant: &'static str,
    detail: String,
}

/// One family's fixtures: its files, its interface and its pin root.
struct Rig {
    family: &'static Family,
    files: tempfile::TempDir,
    obj: (tempfile::TempDir, PathBuf),
    net: Option<VethPair>,
    root: PinRoot,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Before the veth pair and the root go: their own drops know
        // neither this root nor this interface's state in it.
        for clean in self.family.clean {
            let _ = self.meshbpf(clean);
        }
    }
}

impl Rig {
    fn new(family: &'static Family) -> Rig {
        let files = tempfile::tempdir().expect("tempdir");
        for (name, body) in [
            ("r1.json", RULES_1),
            ("r2.json", RULES_2),
            ("c.json", CLASSES),
            ("bans.txt", BANS),
        ] {
            std::fs::write(files.path().join(name), body).expect("writing a rule file");
        }
        Rig {
            family,
            files,
            obj: compile_fixture("load_counter"),
            net: family.net.then(VethPair::new),
            root: PinRoot::new(),
        }
    }

    fn args(&self, template: Args) -> Vec<String> {
        let file = |name: &str| self.files.path().join(name).display().to_string();
        let dev = self.net.as_ref().map_or("", |n| n.dev.as_str());
        let mut args: Vec<String> = template
            .iter()
            .map(|a| match *a {
                "{IF}" => dev.to_string(),
                "{R1}" => file("r1.json"),
                "{R2}" => file("r2.json"),
                "{C}" => file("c.json"),
                "{B}" => file("bans.txt"),
                "{OBJ}" => self.obj.1.display().to_string(),
                other => other.to_string(),
            })
            .collect();
        args.extend(["--bpffs".to_string(), self.root.path.display().to_string()]);
        args
    }

    /// The binary with `args`, behind `wrapper` (strace), in the veth's
    /// namespace when the family has one (nsenter keeps the host's bpffs).
    fn command(&self, wrapper: &[String], template: Args) -> Command {
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", net.ns)).arg("--");
                c.args(wrapper);
                c
            }
            None if wrapper.is_empty() => Command::new(BIN),
            None => {
                let mut c = Command::new(&wrapper[0]);
                c.args(&wrapper[1..]);
                c
            }
        };
        if self.net.is_some() || !wrapper.is_empty() {
            cmd.arg(BIN);
        }
        cmd.args(self.args(template));
        cmd
    }

    fn meshbpf(&self, template: Args) -> Ran {
        Ran::from(run(&mut self.command(&[], template)))
    }

    fn observe(&self) -> State {
        kstate::observe(&self.root.path, self.net.as_ref())
    }

    /// Programs running that no pin keeps (see the module doc).
    /// Programs that outlive the killed command without a pin. The kernel
    /// releases a dead process's tracing and perf_event links from a work
    /// queue, a moment after the process is gone: only a link still there
    /// after a second is a leak.
    fn unpinned(&self, since: u32, names: &BTreeSet<String>, loaded: &Range<u64>) -> Vec<String> {
        let leaks = || match &self.net {
            Some(net) => kstate::unpinned_on_interface(&self.root.path, net),
            None => kstate::unpinned_host_links(since, names, loaded.clone()),
        };
        let mut last = Vec::new();
        common::wait_for(Duration::from_secs(1), || {
            last = leaks();
            last.is_empty().then_some(())
        });
        last
    }

    fn setup(&self) -> Result<(), String> {
        for step in self.family.setup {
            let ran = self.meshbpf(step);
            if ran.code != 0 {
                return Err(format!("setting up `{}`: {ran:?}", step.join(" ")));
            }
        }
        Ok(())
    }

    /// Back to "old" through meshbpf (clean, then set up). When meshbpf
    /// cannot, by force: every pin removed and the interface's hooks
    /// cleared. Says whether force was needed.
    fn reset(&self, old: &State) -> Result<bool, String> {
        for clean in self.family.clean {
            self.meshbpf(clean);
        }
        self.setup()?;
        if self.observe() == *old {
            return Ok(false);
        }
        self.meshbpf(&["health", "--fix"]);
        let _ = std::fs::remove_dir_all(&self.root.path);
        if let Some(net) = &self.net {
            common::sh(&format!(
                "ip -n {ns} link set dev {dev} xdp off; tc -n {ns} qdisc del dev {dev} clsact",
                ns = net.ns,
                dev = net.dev
            ));
        }
        self.setup()?;
        let now = self.observe();
        if now == *old {
            Ok(true)
        } else {
            Err(format!(
                "even by force, the state is not old: {:?}",
                now.diff(old)
            ))
        }
    }

    /// The command once, uninterrupted, under strace: its kill points.
    fn kill_points(&self) -> Vec<(String, u32)> {
        let log = self.files.path().join("strace.log");
        let wrapper = strace(&[
            "-o".into(),
            log.display().to_string(),
            "-e".into(),
            format!("trace={}", TRACED.join(",")),
        ]);
        let ran = Ran::from(run(&mut self.command(&wrapper, self.family.command)));
        assert_eq!(ran.code, 0, "the uninterrupted run failed: {ran:?}");
        let log = std::fs::read_to_string(&log).expect("reading strace's log");
        let mut per_tracee: BTreeMap<(String, String), u32> = BTreeMap::new();
        for line in log.lines() {
            let mut words = line.splitn(2, ' ');
            let (Some(pid), Some(rest)) = (words.next(), words.next()) else {
                continue;
            };
            let rest = rest.trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if rest[name.len()..].starts_with('(') && TRACED.contains(&name.as_str()) {
                *per_tracee.entry((name, pid.to_string())).or_default() += 1;
            }
        }
        let mut most: BTreeMap<String, u32> = BTreeMap::new();
        for ((name, _), count) in per_tracee {
            let m = most.entry(name).or_default();
            *m = (*m).max(count);
        }
        TRACED
            .iter()
            .filter_map(|s| most.get(*s).map(|k| (s.to_string(), *k)))
            .flat_map(|(s, k)| (1..=k).map(move |n| (s.clone(), n)))
            .collect()
    }

    /// Whether `health -j` names anything: a check that is not ok, which
    /// says so when a leftover still runs a program.
    fn health_names_something(&self, runs: bool) -> Result<(), String> {
        let ran = self.meshbpf(&["health", "-j"]);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout)
            .map_err(|e| format!("health -j printed no JSON ({e}): {ran:?}"))?;
        let checks = report["checks"].as_array().cloned().unwrap_or_default();
        let named: Vec<&str> = checks
            .iter()
            .filter(|c| c["status"] != "ok")
            .map(|c| c["detail"].as_str().unwrap_or(""))
            .collect();
        if runs && !named.is_empty() && !named.iter().any(|d| d.contains("run")) {
            Err(format!(
                "a leftover still runs a program, and no check says so: {named:?}"
            ))
        } else if !named.is_empty() {
            Ok(())
        } else {
            Err(format!("every one of its {} checks is ok", checks.len()))
        }
    }

    fn kill_at(
        &self,
        (syscall, n, recovery): (&str, u32, Recovery),
        (old, new): (&State, &State),
        names: &BTreeSet<String>,
    ) -> (bool, Vec<Violation>) {
        let mut found = Vec::new();
        let mut violation = |invariant, detail: String| {
            found.push(Violation {
                syscall: syscall.to_string(),
                n,
                invariant,
                detail,
            })
        };
        let since = kstate::last_link_id();
        let wrapper = strace(&kstate::kill_at_call(syscall, n));
        let start = kstate::boottime_ns();
        let killed = Ran::from(run(&mut self.command(&wrapper, self.family.command))).code == -1;
        let loaded = start..kstate::boottime_ns();

        let left = self.observe();
        for leak in self.unpinned(since, names, &loaded) {
            violation("a program runs without a pin (after the kill)", leak);
        }
        if left != *old && left != *new {
            let runs = left
                .0
                .iter()
                .filter(|l| !old.0.contains(*l) && !new.0.contains(*l))
                .any(|l| l.starts_with("runs ") || l.contains(" link running "));
            if let Err(why) = self.health_names_something(runs) {
                violation(
                    "health names nothing left over",
                    format!("{why}; the state: {}", against(&left, old, new)),
                );
            }
        }

        if recovery == Recovery::NextCommand {
            // A command killed after its commit point has done its work:
            // run again, a load would rightly refuse a duplicate.
            if left == *new {
                return (killed, found);
            }
            let again = self.meshbpf(self.family.command);
            let after = self.observe();
            if again.code != 0 || after != *new {
                violation(
                    "the next command run after the kill does not reach new",
                    format!(
                        "exit {}{}; {}",
                        again.code,
                        error_of(&again),
                        against(&after, old, new)
                    ),
                );
            }
            for leak in self.unpinned(since, names, &loaded) {
                violation(
                    "a program runs without a pin (after the next command)",
                    leak,
                );
            }
            return (killed, found);
        }

        let fix = self.meshbpf(&["health", "--fix", "-j"]);
        let fixed = self.observe();
        if fixed != *old && fixed != *new {
            violation(
                "neither old nor new after health --fix",
                format!(
                    "{} (health --fix exit {}{})",
                    against(&fixed, old, new),
                    fix.code,
                    error_of(&fix)
                ),
            );
        }
        for leak in self.unpinned(since, names, &loaded) {
            violation("a program runs without a pin (after health --fix)", leak);
        }

        if fixed != *new {
            let again = self.meshbpf(self.family.command);
            let after = self.observe();
            if again.code != 0 || after != *new {
                violation(
                    "unrecoverable: the command run again does not reach new",
                    format!(
                        "exit {}{}; {}",
                        again.code,
                        error_of(&again),
                        against(&after, old, new)
                    ),
                );
            }
        }
        (killed, found)
    }
}

/// What follows a kill: `health --fix` then the command, or the command
/// straight away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    Fix,
    NextCommand,
}

fn strace(options: &[String]) -> Vec<String> {
    let mut all = vec!["strace".to_string(), "-f".into(), "-qq".into()];
    all.extend_from_slice(options);
    all.push("--".into());
    all
}

fn error_of(ran: &Ran) -> String {
    let text = if ran.stdout.trim().is_empty() {
        ran.stderr.trim()
    } else {
        ran.stdout.trim()
    };
    if ran.code == 0 || text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.lines().next().unwrap_or(""))
    }
}

/// A state against old and new, each as a short diff.
fn against(state: &State, old: &State, new: &State) -> String {
    let short = |d: Vec<String>| {
        let more = d.len().saturating_sub(8);
        let mut shown = d.into_iter().take(8).collect::<Vec<_>>().join("; ");
        if more > 0 {
            shown.push_str(&format!("; … {more} more"));
        }
        shown
    };
    format!(
        "from old: [{}]; from new: [{}]",
        short(old.diff(state)),
        short(new.diff(state))
    )
}

/// Which of `points` to run: those MESHBPF_CRASH_POINTS names
/// (`bpf:94,unlink:3`), all of them with MESHBPF_CRASH_ALL=1, or
/// MESHBPF_CRASH_SAMPLE (12) spread evenly with the first and the last.
fn chosen(points: &[(String, u32)]) -> Vec<usize> {
    if let Ok(named) = std::env::var("MESHBPF_CRASH_POINTS") {
        let named: Vec<&str> = named.split(',').map(str::trim).collect();
        return (0..points.len())
            .filter(|i| named.contains(&format!("{}:{}", points[*i].0, points[*i].1).as_str()))
            .collect();
    }
    let count = points.len();
    if std::env::var("MESHBPF_CRASH_ALL").as_deref() == Ok("1") || count == 0 {
        return (0..count).collect();
    }
    let sample: usize = std::env::var("MESHBPF_CRASH_SAMPLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
        .clamp(2, count.max(2));
    let mut picked: Vec<usize> = (0..sample)
        .map(|i| i * (count - 1) / (sample - 1))
        .collect();
    picked.dedup();
    picked
}

fn crash_test(family: &'static Family) {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is not installed: `make deps` installs it (Debian package strace)"
    );
    let started = Instant::now();
    let rig = Rig::new(family);
    for clean in family.clean {
        rig.meshbpf(clean);
    }
    rig.setup().unwrap_or_else(|e| panic!("{e}"));
    let old = rig.observe();
    let points = rig.kill_points();
    let new = rig.observe();
    assert_ne!(
        old, new,
        "{}: the command changes nothing the oracle sees",
        family.name
    );
    let mut names = kstate::reachable(&rig.root.path).names;
    rig.reset(&old)
        .unwrap_or_else(|e| panic!("{}: {e}", family.name));
    names.extend(kstate::reachable(&rig.root.path).names);

    let picked = chosen(&points);
    let (mut killed, mut forced) = (0, 0);
    let mut violations = Vec::new();
    let runs = picked
        .iter()
        .flat_map(|index| [(*index, Recovery::Fix), (*index, Recovery::NextCommand)]);
    for (i, (index, recovery)) in runs.enumerate() {
        let (syscall, n) = &points[index];
        if i > 0 {
            match rig.reset(&old) {
                Ok(force) => forced += usize::from(force),
                Err(why) => {
                    violations.push(Violation {
                        syscall: syscall.clone(),
                        n: *n,
                        invariant: "could not reset to old before this point",
                        detail: why,
                    });
                    break;
                }
            }
        }
        let (was_killed, found) = rig.kill_at((syscall, *n, recovery), (&old, &new), &names);
        killed += usize::from(was_killed);
        violations.extend(found);
    }

    let mut by_invariant: BTreeMap<&str, usize> = BTreeMap::new();
    let mut points_failing = BTreeSet::new();
    for v in &violations {
        *by_invariant.entry(v.invariant).or_default() += 1;
        points_failing.insert((v.syscall.clone(), v.n));
    }
    let per_syscall: BTreeMap<&str, usize> =
        points.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
            *m.entry(s.as_str()).or_default() += 1;
            m
        });
    let row = format!(
        "{}: {} kill points ({}), {} run (each with --fix, then with the next command), {} kills, {} with violations, {} resets by force, {:.0} s; violations: {:?}",
        family.name,
        points.len(),
        per_syscall
            .iter()
            .map(|(s, k)| format!("{s} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        picked.len(),
        killed,
        points_failing.len(),
        forced,
        started.elapsed().as_secs_f64(),
        by_invariant
    );
    eprintln!("{row}");
    let mut report = row.clone();
    for v in &violations {
        report.push_str(&format!(
            "\n  {}:{} {}: {}",
            v.syscall, v.n, v.invariant, v.detail
        ));
    }
    let file =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}.txt", family.name));
    let _ = std::fs::write(&file, format!("{report}\n"));
    assert!(violations.is_empty(), "{report}");
}

macro_rules! families {
    ($($test:ident: $family:expr;)*) => {
        $(privileged_test!(
            fn $test() {
                static FAMILY: Family = $family;
                crash_test(&FAMILY);
            }
        );)*
    };
}

families! {
    attach_fresh_tcx: Family {
        name: "attach_fresh_tcx",
        net: true,
        setup: &[],
        command: &["attach", "{IF}", "--tc-method", "tcx"],
        clean: DETACH_IF,
    };
    attach_fresh_netlink: Family {
        name: "attach_fresh_netlink",
        net: true,
        setup: &[],
        command: &["attach", "{IF}", "--tc-method", "netlink"],
        clean: DETACH_IF,
    };
    attach_filter_fresh: Family {
        name: "attach_filter_fresh",
        net: true,
        setup: &[],
        command: &["attach", "{IF}", "--filter", "{R1}"],
        clean: DETACH_IF,
    };
    attach_filter_swap: Family {
        name: "attach_filter_swap",
        net: true,
        setup: &[&["attach", "{IF}"]],
        command: &["attach", "{IF}", "--filter", "{R1}"],
        clean: DETACH_IF,
    };
    filter_apply_replace: Family {
        name: "filter_apply_replace",
        net: true,
        setup: &[&["attach", "{IF}", "--filter", "{R1}"]],
        command: &["filter", "apply", "{IF}", "{R2}"],
        clean: DETACH_IF,
    };
    filter_remove_swap_back: Family {
        name: "filter_remove_swap_back",
        net: true,
        setup: &[&["attach", "{IF}", "--filter", "{R1}"]],
        command: &["filter", "remove", "{IF}"],
        clean: DETACH_IF,
    };
    ban_load: Family {
        name: "ban_load",
        net: true,
        setup: &[&["attach", "{IF}", "--filter", "{R2}"]],
        command: &["filter", "ban", "{IF}", "load", "{B}"],
        clean: DETACH_IF,
    };
    ban_del: Family {
        name: "ban_del",
        net: true,
        setup: &[
            &["attach", "{IF}", "--filter", "{R2}"],
            &["filter", "ban", "{IF}", "load", "{B}"],
        ],
        command: &["filter", "ban", "{IF}", "del", "10.1.0.0/16", "192.0.2.0/24"],
        clean: DETACH_IF,
    };
    attach_classes: Family {
        name: "attach_classes",
        net: true,
        setup: &[&["attach", "{IF}"]],
        command: &["attach", "{IF}", "--classes", "{C}"],
        clean: DETACH_IF,
    };
    detach_tcx: Family {
        name: "detach_tcx",
        net: true,
        setup: &[&["attach", "{IF}", "--tc-method", "tcx"]],
        command: &["detach", "{IF}"],
        clean: DETACH_IF,
    };
    detach_netlink: Family {
        name: "detach_netlink",
        net: true,
        setup: &[&["attach", "{IF}", "--tc-method", "netlink"]],
        command: &["detach", "{IF}"],
        clean: DETACH_IF,
    };
    attach_latency: Family {
        name: "attach_latency",
        net: false,
        setup: &[],
        command: &["attach", "--latency"],
        clean: &[&["detach", "--latency"]],
    };
    detach_latency: Family {
        name: "detach_latency",
        net: false,
        setup: &[&["attach", "--latency"]],
        command: &["detach", "--latency"],
        clean: &[&["detach", "--latency"]],
    };
    attach_lsm: Family {
        name: "attach_lsm",
        net: false,
        setup: &[],
        command: &["attach", "--lsm"],
        clean: &[&["detach", "--lsm"]],
    };
    detach_lsm: Family {
        name: "detach_lsm",
        net: false,
        setup: &[&["attach", "--lsm"]],
        command: &["detach", "--lsm"],
        clean: &[&["detach", "--lsm"]],
    };
    load_object: Family {
        name: "load_object",
        net: false,
        setup: &[],
        command: &["load", "{OBJ}", "--name", "crash", "--pin-maps"],
        clean: &[&["unload", "crash"]],
    };
    unload_object: Family {
        name: "unload_object",
        net: false,
        setup: &[&["load", "{OBJ}", "--name", "crash", "--pin-maps"]],
        command: &["unload", "crash"],
        clean: &[&["unload", "crash"]],
    };
}
