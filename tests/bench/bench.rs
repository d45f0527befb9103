//! `make bench`: measures meshbpf on the running kernel, side by side with an
//! empty XDP program and with the established tools, and rewrites
//! BENCHMARKS.md whole with the method and the numbers.

mod bans;
mod capture;
mod classbench;
#[path = "../common/mod.rs"]
mod common;
mod control;
mod filter;
mod flow_table;
mod footprint;
mod frames;
mod latency;
mod lsm;
mod packet;
mod raw;
mod rulesets;
mod scrape;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Every measurement runs on this CPU, the one NOTES.md measured on.
pub const CPU: usize = 1;

pub struct Config {
    /// Kept samples per row, after one warm-up round.
    pub rounds: usize,
    /// The same for section 2, whose ~30 rows through both tools would take
    /// about four minutes at `rounds`.
    pub filter_rounds: usize,
    /// The same for the flow-table part of section 3, whose bpftool dumps of
    /// a million entries take seconds each.
    pub flow_rounds: usize,
    /// The same for section 5, whose bpftrace rows start bpftrace each time.
    pub latency_rounds: usize,
    /// The same for section 8's control plane, whose loads of a million
    /// bans take seconds each.
    pub ban_rounds: usize,
    /// Runs per BPF_PROG_TEST_RUN call: each call has a fixed cost, so one
    /// long call per sample rather than many short ones.
    pub repeat: u32,
    /// Where Debian's xdp-tools keeps the BPF objects it ships.
    pub xdp_tools_dir: PathBuf,
    /// xdp-filter's allow-policy program with every feature on: an established
    /// XDP parser with map lookups, to put xdp_counter's cost in context.
    pub xdp_filter_object: Option<PathBuf>,
    /// The smallest program xdp-tools ships: what xdp-loader and ip attach
    /// to show the tools' own overhead.
    pub xdpdump_object: Option<PathBuf>,
}

impl Config {
    fn new() -> Self {
        let xdp_tools_dir = Path::new("/usr/lib")
            .join(format!("{}-linux-gnu", std::env::consts::ARCH))
            .join("bpf");
        let shipped = |name: &str| Some(xdp_tools_dir.join(name)).filter(|p| p.is_file());
        Config {
            rounds: 15,
            filter_rounds: 9,
            flow_rounds: 5,
            latency_rounds: 9,
            ban_rounds: 5,
            repeat: 1_000_000,
            xdp_filter_object: shipped("xdpfilt_alw_all.o"),
            xdpdump_object: shipped("xdpdump_xdp.o"),
            xdp_tools_dir,
        }
    }
}

fn pin_to_cpu() {
    let mut cpus = CpuSet::new();
    cpus.set(CPU).expect("CPU index in range");
    sched_setaffinity(Pid::from_raw(0), &cpus)
        .unwrap_or_else(|e| panic!("pinning the bench to CPU {CPU}: {e}"));
}

fn main() {
    let started = Instant::now();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmarks load and attach eBPF programs: run them as root"
    );
    if std::env::var_os(lsm::GUEST_ENV).is_some() {
        pin_to_cpu();
        lsm::guest();
        return;
    }
    let config = Config::new();
    // Collected before pinning, which would hide the other CPUs.
    let header = environment_header();
    pin_to_cpu();
    if let Some(only) = std::env::var_os(ONLY_ENV) {
        print!("{}", only_section(&config, &only.to_string_lossy()));
        return;
    }

    eprintln!("bench: per-packet cost ({} rounds)", config.rounds);
    let packet = packet::measure(&config);
    eprintln!("bench: filtering cost ({} rounds)", config.filter_rounds);
    let filter = filter::measure(&config);
    eprintln!("bench: control plane ({} rounds)", config.rounds);
    let control = control::measure(&config);
    eprintln!(
        "bench: flow table of {} flows ({} rounds)",
        flow_table::FLOWS,
        config.flow_rounds
    );
    let flow_table = flow_table::measure(&config);
    eprintln!("bench: Prometheus scrape ({} rounds)", config.rounds);
    let scrape = scrape::measure(&config);
    eprintln!(
        "bench: syscall latency tracing ({} rounds)",
        config.latency_rounds
    );
    let latency = latency::measure(&config);
    eprintln!(
        "bench: lsm_monitor's tracepoint fallback ({} rounds)",
        config.latency_rounds
    );
    let lsm = lsm::measure(&config);
    eprintln!(
        "bench: ClassBench rule sets ({} rounds)",
        config.filter_rounds
    );
    let classbench = classbench::measure(&config);
    eprintln!(
        "bench: ban sets ({} rounds, {} for the control plane)",
        config.filter_rounds, config.ban_rounds
    );
    let bans = bans::measure(&config);
    eprintln!("bench: capture ({} rounds)", config.rounds);
    let capture = capture::measure(&config);
    let report = [
        header,
        method(&config),
        packet.markdown(),
        filter.markdown(),
        control.markdown(),
        flow_table.markdown(),
        scrape.markdown(),
        binary_section(),
        latency.markdown(),
        lsm.markdown(),
        classbench.markdown(),
        bans.markdown(),
        capture.markdown(),
        reading_the_numbers(&config),
        format!("This run took {:.0} s.\n", started.elapsed().as_secs_f64()),
    ]
    .join("\n");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    std::fs::write(&path, &report).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    print!("{report}");
    eprintln!("bench: wrote {}", path.display());
}

/// MESHBPF_BENCH_ONLY=filter, =control, =classbench, =lsm, =bans or =capture runs that section
/// alone and prints it, leaving BENCHMARKS.md as it is: for work on one
/// section.
const ONLY_ENV: &str = "MESHBPF_BENCH_ONLY";

fn only_section(config: &Config, section: &str) -> String {
    match section {
        "filter" => filter::measure(config).markdown(),
        "control" => control::measure(config).markdown(),
        "classbench" => classbench::measure(config).markdown(),
        "lsm" => lsm::measure(config).markdown(),
        "bans" => bans::measure(config).markdown(),
        "capture" => capture::measure(config).markdown(),
        other => panic!(
            "{ONLY_ENV}={other}: the sections that run alone are filter, control, classbench, lsm, bans and capture"
        ),
    }
}

/// `meshbpf -j ARGS` on the pin root `root` (each section keeps its own, so
/// an operator's attachments are neither used nor touched); its JSON.
pub fn meshbpf_on(root: &str, args: &[&str]) -> serde_json::Value {
    let out = common::run(
        Command::new(common::BIN)
            .args(["--bpffs", root, "-j"])
            .args(args),
    );
    assert!(
        out.status.success(),
        "meshbpf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("meshbpf -j prints JSON")
}

/// The first line a command prints, or why there is none.
pub fn first_line(words: &[&str]) -> String {
    match Command::new(words[0]).args(&words[1..]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        _ => format!("unknown (`{}` failed)", words.join(" ")),
    }
}

fn environment_header() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let commit = first_line(&["git", "rev-parse", "--short", "HEAD"]);
    let dirty = !first_line(&["git", "status", "--porcelain"]).is_empty();
    // SAFETY: plain getters without arguments.
    let libbpf = unsafe {
        format!(
            "{}.{}",
            libbpf_sys::libbpf_major_version(),
            libbpf_sys::libbpf_minor_version()
        )
    };
    let rows: Vec<Vec<String>> = [
        ("when", first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])),
        (
            "commit",
            commit + if dirty { " + uncommitted changes" } else { "" },
        ),
        ("kernel", first_line(&["uname", "-rv"])),
        (
            "CPU",
            format!("{cpu_model} ({cpus} CPUs; measured on CPU {CPU})"),
        ),
        ("rustc", first_line(&["rustc", "-V"])),
        ("clang (BPF objects)", first_line(&["clang", "--version"])),
        ("libbpf (vendored)", libbpf),
        ("bpftool", first_line(&["bpftool", "version"])),
        (
            "xdp-tools (Debian package)",
            first_line(&["dpkg-query", "-W", "-f=${Version}", "xdp-tools"]),
        ),
        ("iproute2", first_line(&["ip", "-V"])),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    format!(
        "# meshbpf benchmarks\n\n\
Generated by `make bench` (tests/bench/); every run rewrites this file, so do not edit it by hand.\n\n{}",
        stats::table(&["", ""], &rows)
    )
}

fn method(config: &Config) -> String {
    format!(
        "## Method\n\n\
Everything runs on the real kernel, as root, pinned to CPU {CPU} with sched_setaffinity (child processes inherit it). \
Each row is measured {rounds} times ({filter_rounds} in section 2, to keep the run short) after one discarded warm-up \
round, interleaved with the rows it is compared to so that drift on this shared, noisy machine hits all of them alike; \
the order rotates every round. Tables give the median, the range of the samples, and the median's difference and \
ratio to the baseline. Sections 1 and 2: each sample is one BPF_PROG_TEST_RUN call with repeat {repeat} on an \
unattached program, and the kernel's own average per run; the floor is `r0 = XDP_PASS; exit` loaded from raw \
instructions, measured in the same run as the rows it is the floor of. Every call must return the row's verdict, and \
before timing one run per frame must land where the row says: in the frame's own xdp_counter slots (section 1), in \
the rule or default counters of the filters (section 2). The cross-check runs `taskset -c {CPU} bpftool prog run id ID \
data_in FRAME repeat {repeat}` on the same loaded programs. Section 3: wall time from spawn to exit of the release \
binary and of the established tools, started from a thread inside the veth's namespace; the floor is spawning `true`. \
Its flow-table part times {flow_rounds} rounds, after one run of each command whose output is checked, which is the \
warm-up; stdout goes to /dev/null.\n",
        rounds = config.rounds,
        filter_rounds = config.filter_rounds,
        flow_rounds = config.flow_rounds,
        repeat = config.repeat,
    )
}

fn binary_section() -> String {
    let bytes = std::fs::metadata(common::BIN)
        .unwrap_or_else(|e| panic!("{}: {e}", common::BIN))
        .len();
    let ldd = common::run(Command::new("ldd").arg(common::BIN));
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let rows = vec![
        vec![
            "size".into(),
            format!(
                "{bytes} bytes ({:.2} MiB)",
                bytes as f64 / (1024.0 * 1024.0)
            ),
        ],
        vec![
            "`ldd` lines".into(),
            format!("{} ({})", libraries.len(), libraries.join(", ")),
        ],
    ];
    format!(
        "## 4. Binary (`{}`)\n\n\
The binary this run used. cargo builds it separately for benches, so it is not the very file `make build` \
leaves, but the same source with the same `[profile.release]` settings.\n\n{}",
        common::BIN,
        stats::table(&["what", "value"], &rows)
    )
}

fn reading_the_numbers(config: &Config) -> String {
    format!(
        "## Reading the numbers\n\n\
- Medians of {rounds} ({filter_rounds} in section 2, {flow_rounds} in section 3's flow table); single samples on \
this machine stray by 10-20 %, so only differences well outside the min–max ranges mean something. The kernel reports whole nanoseconds per run.\n\
- Sections 1 and 2 are the program alone: no driver, no skb, no syscall. \"vs floor\" is what a program's parsing, \
lookups and counting add to any XDP program; the bpftool column should agree with the test_run column, as both read \
the kernel's timer.\n\
- Section 2 runs every packet of a row through the same map entries a million times, so the entries stay in the \
CPU's caches: the numbers are the cost of the lookups' code paths, a lower bound of a real mix of sources.\n\
- Section 3 includes process start-up (the floor row). Compare `attach` with `load only` to see how much of \
attaching is loading: libbpf's open and CO-RE relocation, then the kernel's verifier. xdp-loader's time depends on \
the object it loads; xdp-filter's creates per-CPU maps of up to 65,536 entries. On this kernel libxdp cannot use \
its multi-program dispatcher (it needs freplace) and attaches a single program, as ip does.\n\
- In the flow-table rows both tools read the same million entries; what differs is how. `meshbpf flows` reads them in \
batches (BPF_MAP_LOOKUP_BATCH, thousands of flows per call), then filters, keeps the top N and prints them; bpftool \
makes a get-next-key and a lookup call per entry and writes each as JSON, raw bytes and BTF-formatted. The filtered \
query runs its filters on every flow but ranks fewer of them.\n",
        rounds = config.rounds,
        filter_rounds = config.filter_rounds,
        flow_rounds = config.flow_rounds,
    )
}
