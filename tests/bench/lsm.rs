//! Section 6: what lsm_monitor's tracepoint fallback (the method this kernel
//! runs) costs a process, and how many events per second `meshbpf events`
//! delivers. The bench process times open()+close() of a file with the
//! monitor detached, attached with the file outside the watched directory,
//! and attached with it inside; then it streams opens through
//! `meshbpf events -j --follow` in bursts that fit the ring buffer.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{wait_for, BIN};
use crate::stats::{self, Row, Summary};
use crate::Config;

/// open()+close() pairs per sample.
const OPENS: u64 = 200_000;
/// Opens per burst of the delivery run: fewer than the 4 MiB ring buffer
/// holds (about 11,900 records), so a reader that keeps up loses none.
const BURST: u64 = 8_000;
const BURSTS: u64 = 25;
/// Its own pin root, so an operator's attachment is neither used nor touched.
const ROOT: &str = "/sys/fs/bpf/meshbpf-bench-lsm";
/// The CPU the event reader runs on, away from the bench's.
const READER_CPU: usize = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Detached,
    Unwatched,
    Watched,
}

pub struct Results {
    rows: Vec<Row<Setup>>,
    delivered_per_s: Vec<f64>,
}

fn meshbpf(args: &[&str]) -> Value {
    crate::meshbpf_on(ROOT, args)
}

/// The watched directory, and the policy file that watches it.
struct Files {
    watched: tempfile::TempDir,
    unwatched: tempfile::TempDir,
    policy: PathBuf,
}

impl Files {
    fn new() -> Files {
        let watched = tempfile::tempdir().expect("tempdir");
        let unwatched = tempfile::tempdir().expect("tempdir");
        for dir in [&watched, &unwatched] {
            std::fs::write(dir.path().join("file"), b"x").expect("writing the opened file");
        }
        let policy = unwatched.path().join("policy.json");
        std::fs::write(
            &policy,
            serde_json::json!({ "watch": [watched.path()] }).to_string(),
        )
        .expect("writing the policy");
        Files {
            watched,
            unwatched,
            policy,
        }
    }

    fn file(&self, setup: Setup) -> PathBuf {
        match setup {
            Setup::Watched => self.watched.path().join("file"),
            _ => self.unwatched.path().join("file"),
        }
    }

    fn attach(&self) {
        let attached = meshbpf(&["attach", "--lsm", "--policy", self.policy.to_str().unwrap()]);
        assert_eq!(attached["method"], "tracepoint", "{attached}");
    }
}

/// Nanoseconds per open()+close() of `path`, `count` times.
fn time_opens(path: &Path, count: u64) -> f64 {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let started = Instant::now();
    for _ in 0..count {
        // SAFETY: a NUL-terminated path; the descriptor is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            assert!(fd >= 0, "open failed");
            libc::close(fd);
        }
    }
    started.elapsed().as_nanos() as f64 / count as f64
}

/// The monitor's open events and lost ones, from `stats -j`.
fn open_events(stats: &Value) -> (u64, u64) {
    let monitor = stats
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["program"] == "lsm_monitor"))
        .unwrap_or_else(|| panic!("no lsm_monitor in stats: {stats}"));
    let open = &monitor["events"]["open"];
    (
        open["events"].as_u64().unwrap(),
        open["lost"].as_u64().unwrap(),
    )
}

fn sample(files: &Files, setup: Setup) -> f64 {
    if setup == Setup::Detached {
        return time_opens(&files.file(setup), OPENS);
    }
    files.attach();
    let ns = time_opens(&files.file(setup), OPENS);
    let (events, lost) = open_events(&meshbpf(&["stats"]));
    // Every open of the watched file became an event, delivered or lost;
    // of the other file, none.
    match setup {
        Setup::Watched => assert!(events == OPENS && lost > 0, "{events} events, {lost} lost"),
        _ => assert_eq!(events, 0, "opens of an unwatched file were reported"),
    }
    meshbpf(&["detach", "--lsm"]);
    ns
}

/// Whether process `pid` is stopped (SIGSTOP), from /proc.
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        == Some("T")
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("sending {signal} to {pid}: {e}"));
}

/// Events per second that `events -j --follow` reads and prints: the
/// reader is stopped while a burst fills the buffer, then timed from
/// SIGCONT to its burst's last line.
fn delivery(files: &Files) -> f64 {
    use nix::sys::signal::Signal;
    files.attach();
    let mut reader = Command::new("taskset")
        .args(["-c", &READER_CPU.to_string(), BIN, "--bpffs", ROOT])
        .args(["events", "-j", "--follow", "--type", "open"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning meshbpf events --follow");
    let pid = reader.id();
    let stdout = reader.stdout.take().unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lines);
    let last = std::thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stdout).lines() {
            last = line.expect("reading events");
            counted.fetch_add(1, Ordering::SeqCst);
        }
        last
    });
    let file = files.file(Setup::Watched);
    let mut reading = Duration::ZERO;
    for burst in 1..=BURSTS {
        signal(pid, Signal::SIGSTOP);
        wait_for(Duration::from_secs(10), || stopped(pid).then_some(())).expect("the reader stops");
        time_opens(&file, BURST);
        let started = Instant::now();
        signal(pid, Signal::SIGCONT);
        wait_for(Duration::from_secs(30), || {
            (lines.load(Ordering::SeqCst) >= burst * BURST).then_some(())
        })
        .unwrap_or_else(|| panic!("events --follow did not print burst {burst}"));
        reading += started.elapsed();
    }
    let rate = (BURSTS * BURST) as f64 / reading.as_secs_f64();
    signal(pid, Signal::SIGINT);
    assert_eq!(reader.wait().unwrap().code(), Some(130));
    let summary: Value = serde_json::from_str(&last.join().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["lost_by_type"]["open"], 0, "{summary}");
    assert_eq!(lines.load(Ordering::SeqCst), BURSTS * BURST + 1);
    meshbpf(&["detach", "--lsm"]);
    rate
}

pub fn measure(config: &Config) -> Results {
    let files = Files::new();
    let mut rows = vec![
        Row::new("not attached", Setup::Detached),
        Row::new(
            "attached, the file outside the watched directory",
            Setup::Unwatched,
        ),
        Row::new(
            "attached, the file watched (an event each; nothing reads, so the full buffer drops most)",
            Setup::Watched,
        ),
    ];
    stats::sample_rotating(&mut rows, config.latency_rounds, |setup| {
        sample(&files, setup)
    });
    let delivered_per_s = (0..config.latency_rounds.min(5))
        .map(|_| delivery(&files))
        .collect();
    // Every sample detached; the root itself is the bench's too.
    std::fs::remove_dir(ROOT).unwrap_or_else(|e| panic!("removing {ROOT}: {e}"));
    Results {
        rows,
        delivered_per_s,
    }
}

fn per_second(value: f64) -> String {
    format!("{} /s", stats::thousands(value.round() as usize))
}

impl Results {
    pub fn markdown(&self) -> String {
        let base = Summary::of(&self.rows[0].samples);
        let table_rows: Vec<Vec<String>> =
            self.rows.iter().map(|row| row.ns_cells(&base)).collect();
        let delivered = Summary::of(&self.delivered_per_s);
        let mut delivery_cells = vec!["`meshbpf events -j --follow`".to_string()];
        delivery_cells.extend(delivered.cells(per_second));
        format!(
            "## 6. lsm_monitor's tracepoint fallback (ns per open()+close(), {opens} pairs per sample)\n\n\
This kernel refuses BPF LSM programs, so `attach --lsm` runs the fallback: a raw tracepoint on every syscall's \
entry that compares the syscall number with the ones it watches and, for an open, reads the path from user memory \
and looks it up in the policy's LPM trie. The bench process opens and closes one file {opens} times per sample on \
CPU {cpu}, with the monitor detached and attached (policy: one watched directory), {rounds} rounds after a warm-up \
round, the order rotating every round. Each attached sample attaches, times, checks in `stats` that every open of \
the watched file was counted (delivered or lost) and none of the other, and detaches. Both syscalls of a pair pass \
the raw tracepoint. \"added\" is the median minus the detached median.\n\n{table}\n\
Delivery: `meshbpf events -j --follow --type open` runs on CPU {reader_cpu}, its stdout read line by line by the \
bench. For each of {bursts} bursts the bench stops the reader (SIGSTOP), opens the watched file {burst} times (the \
4 MiB ring buffer holds about 11,900 records, so none is lost), lets the reader go on (SIGCONT) and waits for the \
burst's last line; at the end it checks that the summary counts no open lost. The rate is all events divided by \
the time from each SIGCONT to its burst's last line: what the reader decodes and prints per second, over \
{delivery_rounds} runs.\n\n{delivery}",
            opens = stats::thousands(OPENS as usize),
            cpu = crate::CPU,
            rounds = self.rows[0].samples.len(),
            table = stats::table(&["monitor", "median", "range", "added"], &table_rows),
            reader_cpu = READER_CPU,
            burst = stats::thousands(BURST as usize),
            bursts = BURSTS,
            delivery_rounds = self.delivered_per_s.len(),
            delivery = stats::table(
                &["events delivered without loss", "median", "range"],
                &[delivery_cells]
            ),
        )
    }
}
