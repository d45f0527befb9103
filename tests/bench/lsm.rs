//! Section 6: what lsm_monitor's tracepoint fallback (the method this kernel
//! runs) costs a process, and how many events per second `meshbpf events`
//! delivers. The bench process times open()+close() of a file with the
//! monitor detached, attached with the file outside the watched directory,
//! and attached with it inside, and under bpftrace doing the same job; then
//! it streams opens through `meshbpf events -j --follow` in bursts that fit
//! the ring buffer. The same open rows run once more inside a VM whose
//! kernel runs the BPF LSM programs (this bench binary, booted by
//! tests/vm/run).

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{wait_for, BIN};
use crate::latency;
use crate::stats::{self, Row, Summary};
use crate::Config;

/// Where the open rows run: here, with the fallback, or in the VM with BPF
/// LSM, where emulation makes each open about 15 times slower.
#[derive(Clone, Copy)]
struct Place {
    method: &'static str,
    /// open()+close() pairs per sample.
    opens: u64,
}

const HOST: Place = Place {
    method: "tracepoint",
    opens: 200_000,
};
const GUEST: Place = Place {
    method: "lsm",
    opens: 50_000,
};
/// The kernel the VM rows boot (tests/vm/fetch-kernel caches it).
const VM_KERNEL: &str = "linux-image-6.12-amd64";
/// Set by the host for this binary inside the VM: run the guest rows only.
pub const GUEST_ENV: &str = "MESHBPF_BENCH_LSM_GUEST";
/// Rounds in the VM, kept short under emulation.
const GUEST_ROUNDS: usize = 9;
/// Around the guest's table in the VM's output.
const TABLE_MARK: &str = "-- lsm bench table --";
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
    /// bpftrace doing the watched row's job: a raw sys_enter probe that
    /// reads each openat's path from user memory, compares it and prints a
    /// line per match.
    Bpftrace,
}

pub struct Results {
    rows: Vec<Row<Setup>>,
    bpftrace: Option<String>,
    script: String,
    delivered_per_s: Vec<f64>,
    /// The VM's table, or why there is none.
    guest: Result<String, String>,
}

fn bpftrace_script(watched: &Path) -> String {
    format!(
        "tracepoint:raw_syscalls:sys_enter /args->id == {openat}/ {{ $p = str(uptr(args->args[1])); \
if ($p == \"{path}\") {{ printf(\"%d %s\\n\", pid, $p); }} }}",
        openat = libc::SYS_openat,
        path = watched.display()
    )
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

    fn attach(&self, place: Place) {
        let attached = meshbpf(&["attach", "--lsm", "--policy", self.policy.to_str().unwrap()]);
        assert_eq!(attached["method"], place.method, "{attached}");
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

fn sample(files: &Files, setup: Setup, place: Place) -> f64 {
    let file = files.file(setup);
    match setup {
        Setup::Detached => return time_opens(&file, place.opens),
        Setup::Bpftrace => {
            let child = latency::start_bpftrace(&bpftrace_script(&file));
            let ns = time_opens(&file, place.opens);
            latency::stop_bpftrace(child);
            return ns;
        }
        Setup::Unwatched | Setup::Watched => {}
    }
    files.attach(place);
    let ns = time_opens(&file, place.opens);
    let (events, lost) = open_events(&meshbpf(&["stats"]));
    // Every open of the watched file became an event, delivered or lost;
    // of the other file, none.
    match setup {
        Setup::Watched => assert!(
            events == place.opens && lost > 0,
            "{events} events, {lost} lost"
        ),
        _ => assert_eq!(events, 0, "opens of an unwatched file were reported"),
    }
    meshbpf(&["detach", "--lsm"]);
    ns
}

fn open_rows() -> Vec<Row<Setup>> {
    vec![
        Row::new("not attached", Setup::Detached),
        Row::new(
            "attached, the file outside the watched directory",
            Setup::Unwatched,
        ),
        Row::new(
            "attached, the file watched (an event each; nothing reads, so the full buffer drops most)",
            Setup::Watched,
        ),
    ]
}

fn open_table(rows: &[Row<Setup>]) -> String {
    let base = Summary::of(&rows[0].samples);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = row.ns_cells(&base);
            cells.push(Summary::of(&row.samples).versus(&base, stats::ns)[1].clone());
            cells
        })
        .collect();
    stats::table(&["monitor", "median", "range", "added", "ratio"], &cells)
}

/// In the VM: the open rows with BPF LSM, printed between marks for the
/// host to pick up.
pub fn guest() {
    let files = Files::new();
    let mut rows = open_rows();
    stats::sample_rotating(&mut rows, GUEST_ROUNDS, |setup| {
        sample(&files, setup, GUEST)
    });
    std::fs::remove_dir(ROOT).unwrap_or_else(|e| panic!("removing {ROOT}: {e}"));
    println!(
        "{TABLE_MARK}\n{}{TABLE_MARK}\nkernel: {}",
        open_table(&rows),
        crate::first_line(&["uname", "-r"])
    );
}

/// Boots VM_KERNEL with this binary as the job: the guest's table and
/// kernel, or why there is none.
fn in_vm() -> Result<String, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fetched = Command::new(repo.join("tests/vm/fetch-kernel"))
        .arg(VM_KERNEL)
        .output()
        .map_err(|e| format!("tests/vm/fetch-kernel: {e}"))?;
    if !fetched.status.success() {
        return Err(String::from_utf8_lossy(&fetched.stderr).into_owned());
    }
    let kernel = String::from_utf8_lossy(&fetched.stdout).trim().to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(repo.join("tests/vm/run"))
        .args([&kernel, "--"])
        .arg(exe)
        .env(GUEST_ENV, "1")
        .current_dir(repo)
        .output()
        .map_err(|e| format!("tests/vm/run: {e}"))?;
    let output = String::from_utf8_lossy(&out.stdout);
    let mut parts = output.split(TABLE_MARK);
    match (out.status.success(), parts.nth(1), parts.next()) {
        (true, Some(table), Some(rest)) => Ok(format!(
            "{}\n{}",
            rest.trim().trim_start_matches("kernel: "),
            table.trim_start()
        )),
        _ => Err(format!(
            "the VM run failed ({}): {}",
            out.status,
            output.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        )),
    }
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
    files.attach(HOST);
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
    let mut rows = open_rows();
    let bpftrace = latency::bpftrace_version();
    if bpftrace.is_some() {
        rows.push(Row::new(
            "bpftrace, the script below, on the watched file",
            Setup::Bpftrace,
        ));
    }
    stats::sample_rotating(&mut rows, config.latency_rounds, |setup| {
        sample(&files, setup, HOST)
    });
    let delivered_per_s = (0..config.latency_rounds.min(5))
        .map(|_| delivery(&files))
        .collect();
    // Every sample detached; the root itself is the bench's too.
    std::fs::remove_dir(ROOT).unwrap_or_else(|e| panic!("removing {ROOT}: {e}"));
    eprintln!("bench: security monitor with BPF LSM, in a VM booting {VM_KERNEL}");
    Results {
        rows,
        bpftrace,
        script: bpftrace_script(&files.file(Setup::Watched)),
        delivered_per_s,
        guest: in_vm(),
    }
}

fn per_second(value: f64) -> String {
    format!("{} /s", stats::thousands(value.round() as usize))
}

impl Results {
    pub fn markdown(&self) -> String {
        let delivered = Summary::of(&self.delivered_per_s);
        let mut delivery_cells = vec!["`meshbpf events -j --follow`".to_string()];
        delivery_cells.extend(delivered.cells(per_second));
        let guest = match &self.guest {
            Ok(table) => {
                let (kernel, table) = table.split_once('\n').unwrap_or_default();
                format!(
                    "The same rows with BPF LSM programs (`file_open` and the other hooks), in a VM booting \
{kernel} under QEMU's TCG emulation, {guest_opens} pairs per sample, {guest_rounds} rounds; this bench binary \
runs as the VM's job. Emulation makes every instruction many times slower, so only the ratios say something, \
and only roughly; the absolute times are not comparable with the host's.\n\n{table}",
                    guest_opens = stats::thousands(GUEST.opens as usize),
                    guest_rounds = GUEST_ROUNDS,
                )
            }
            Err(why) => format!("No BPF LSM rows in this run: {why}\n"),
        };
        format!(
            "## 6. lsm_monitor (ns per open()+close(), {opens} pairs per sample)\n\n\
This kernel refuses BPF LSM programs, so `attach --lsm` runs the fallback: raw tracepoints on every syscall's \
entry and exit that compare the syscall number with the ones they watch; at an open's exit it names the file the \
returned fd holds (a walk of its dentries up to the task's root, across mounts) and looks that up in the policy's \
LPM trie. The bench process opens and closes one file {opens} times per sample on \
CPU {cpu}, with the monitor detached and attached (policy: one watched directory), {rounds} rounds after a warm-up \
round, the order rotating every round. Each attached sample attaches, times, checks in `stats` that every open of \
the watched file was counted (delivered or lost) and none of the other, and detaches. Both syscalls of a pair pass \
both raw tracepoints. \"added\" is the median minus the detached median. bpftrace ({version}) does the watched \
row's job with the script below (without a policy: one path compared); it is started, given 1.5 s after it says it \
is attaching, timed and stopped.\n\n\
bpftrace script: `{script}`\n\n{table}\n{guest}\n\
Delivery: `meshbpf events -j --follow --type open` runs on CPU {reader_cpu}, its stdout read line by line by the \
bench. For each of {bursts} bursts the bench stops the reader (SIGSTOP), opens the watched file {burst} times (the \
4 MiB ring buffer holds about 11,900 records, so none is lost), lets the reader go on (SIGCONT) and waits for the \
burst's last line; at the end it checks that the summary counts no open lost. The rate is all events divided by \
the time from each SIGCONT to its burst's last line: what the reader decodes and prints per second, over \
{delivery_rounds} runs.\n\n{delivery}",
            opens = stats::thousands(HOST.opens as usize),
            cpu = crate::CPU,
            rounds = self.rows[0].samples.len(),
            version = self.bpftrace.as_deref().unwrap_or("not installed: no bpftrace row"),
            script = self.script,
            table = open_table(&self.rows),
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
