//! Section 5: what tracing syscall latency adds to each syscall. The bench
//! process times getpid() untraced, under `meshbpf attach --latency` (each
//! method, and with a filter that excludes it), and under bpftrace's
//! raw_syscalls latency histogram where bpftrace is installed, round after
//! round in rotating order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::stats::{self, Row, Summary};
use crate::Config;

/// getpid() calls per sample.
const CALLS: u64 = 2_000_000;
/// Its own pin root, so an operator's attachment is neither used nor touched.
const ROOT: &str = "/sys/fs/bpf/meshbpf-bench-latency";
/// The script the issue compares with, verbatim.
pub const BPFTRACE_SCRIPT: &str = "tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs } \
tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @h = hist(nsecs - @s[tid]); delete(@s[tid]) }";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracer {
    None,
    Meshbpf(&'static [&'static str]),
    Bpftrace,
}

pub struct Results {
    rows: Vec<Row<Tracer>>,
    bpftrace: Option<String>,
}

fn meshbpf(args: &[&str]) -> Value {
    crate::meshbpf_on(ROOT, args)
}

/// Nanoseconds per getpid(), through the raw syscall so no libc cache helps.
fn time_getpid() -> f64 {
    let started = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: getpid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    started.elapsed().as_nanos() as f64 / CALLS as f64
}

/// bpftrace running `script`; ready once it printed that it attached and
/// its probes fire. What it prints afterwards is read and dropped.
pub fn start_bpftrace(script: &str) -> Child {
    let mut child = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning bpftrace");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.starts_with("Attaching"), "bpftrace said: {first}");
    // It prints before attaching: wait until its maps see our syscalls.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Stops bpftrace with SIGINT, sent again each second until it exits:
/// bpftrace 0.17 sometimes misses the first one and waits on forever.
pub fn stop_bpftrace(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("stopping bpftrace");
        for _ in 0..10 {
            if child.try_wait().expect("waiting for bpftrace").is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// bpftrace's version; None when it is not installed.
pub fn bpftrace_version() -> Option<String> {
    Command::new("bpftrace")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn sample(tracer: Tracer) -> f64 {
    match tracer {
        Tracer::None => time_getpid(),
        Tracer::Meshbpf(args) => {
            let mut attach = vec!["attach", "--latency"];
            attach.extend_from_slice(args);
            meshbpf(&attach);
            let ns = time_getpid();
            let seen = meshbpf(&["latency", "--syscall", "getpid"]);
            let counted = seen["syscalls"]
                .get(0)
                .and_then(|s| s["count"].as_u64())
                .unwrap_or(0);
            // Traced rows must have counted every call, filtered ones none.
            if args.contains(&"--pid") {
                assert_eq!(counted, 0, "the pid filter let getpid through");
            } else {
                assert!(
                    counted >= CALLS,
                    "counted {counted} of {CALLS} getpid calls"
                );
            }
            meshbpf(&["detach", "--latency"]);
            ns
        }
        Tracer::Bpftrace => {
            let child = start_bpftrace(BPFTRACE_SCRIPT);
            let ns = time_getpid();
            stop_bpftrace(child);
            ns
        }
    }
}

pub fn measure(config: &Config) -> Results {
    let bpftrace = bpftrace_version();
    let mut rows = vec![
        Row::new("untraced", Tracer::None),
        Row::new(
            "`meshbpf attach --latency` (probed: tp_btf)",
            Tracer::Meshbpf(&[]),
        ),
        Row::new(
            "`meshbpf attach --latency --method raw-tp`",
            Tracer::Meshbpf(&["--method", "raw-tp"]),
        ),
        Row::new(
            "`meshbpf attach --latency --pid 1` (this process filtered out)",
            Tracer::Meshbpf(&["--pid", "1"]),
        ),
    ];
    if bpftrace.is_some() {
        rows.push(Row::new("bpftrace, the script below", Tracer::Bpftrace));
    }
    stats::sample_rotating(&mut rows, config.latency_rounds, sample);
    // Every sample detached; the root itself is the bench's too.
    std::fs::remove_dir(ROOT).unwrap_or_else(|e| panic!("removing {ROOT}: {e}"));
    Results { rows, bpftrace }
}

impl Results {
    pub fn markdown(&self) -> String {
        let base = Summary::of(&self.rows[0].samples);
        let added = |row: &Row<Tracer>| Summary::of(&row.samples).median - base.median;
        let ours = added(&self.rows[1]);
        let bpftrace = self.rows.iter().find(|r| r.kind == Tracer::Bpftrace);
        let table_rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut cells = row.ns_cells(&base);
                cells.push(match bpftrace {
                    Some(bt) if row.kind != Tracer::None => {
                        format!("×{:.2}", added(row) / added(bt))
                    }
                    _ => String::new(),
                });
                cells
            })
            .collect();
        let verdict = match bpftrace {
            Some(bt) => format!(
                "meshbpf adds {} per traced syscall, bpftrace {}: {:.2} of bpftrace's added cost (target: at most 0.50).",
                stats::ns(ours),
                stats::ns(added(bt)),
                ours / added(bt)
            ),
            None => "bpftrace is not installed (`make bench-deps` installs it): no comparison in this run.".into(),
        };
        format!(
            "## 5. Syscall latency tracing (ns per getpid(), {calls} calls per sample)\n\n\
The bench process calls getpid() through syscall(2) {calls} times per sample on CPU {cpu}, untraced and under each tracer, \
{rounds} rounds after a warm-up round, the order rotating every round. Each meshbpf sample attaches, times, checks that \
`meshbpf latency` counted every getpid() (none with the pid filter), and detaches; bpftrace ({version}) is started, \
given 1.5 s after it says it is attaching, timed, and stopped. \"added\" is the median minus the untraced median; \
\"of bpftrace's\" divides it by bpftrace's.\n\n\
bpftrace script: `{script}`\n\n{table}\n{verdict}\n",
            calls = stats::thousands(CALLS as usize),
            cpu = crate::CPU,
            rounds = self.rows[0].samples.len(),
            version = self.bpftrace.as_deref().unwrap_or("not installed"),
            script = BPFTRACE_SCRIPT,
            table = stats::table(
                &["tracer", "median", "range", "added", "of bpftrace's added"],
                &table_rows
            ),
        )
    }
}
