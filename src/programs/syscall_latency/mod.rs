//! syscall_latency: log2 latency histograms per syscall, or of one kernel
//! function.
//!
//! Syscalls are timed from raw_syscalls:sys_enter to sys_exit through
//! tp_btf, or raw_tp where the kernel has no BTF-typed tracepoints; a
//! function from entry to return through fentry/fexit, or
//! kprobe/kretprobe where trampolines are refused. Methods are chosen by
//! trying them in that order against the running kernel, never by version.
//! The layout is include/syscall_latency.h, read through the skeleton.

use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, ProgramMut};
use serde::Serialize;

use crate::error::{errno_of, Failure};
use crate::kernel::btf::OpenOpts;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::{self, plain_data};
use crate::kernel::{bpfobj, clock, mounts, syscalls, verifier};
use crate::programs::maps;
use crate::programs::{Facets, Scope};

pub mod health;
pub mod histogram;
pub mod metrics;
pub mod skel;
pub mod stats;

pub use histogram::Histogram;

pub use skel::types::{latency_config, latency_filters, latency_hist, latency_limits};
pub use skel::SyscallLatencySkel;

plain_data!(latency_hist, skel::types::rodata);

pub const PROGRAM: &str = "syscall_latency";

pub const FACETS: Facets = Facets {
    name: PROGRAM,
    scope: Scope::Host,
    metrics: metrics::families,
    health: Some(health::checks),
    stats: Some(|dir| Ok(Box::new(inspect(dir)?))),
};

/// Pin names in `<root>/host/syscall_latency/`; the sys_exit program and
/// its link are the attachment's `prog` and `link` pins.
pub const HISTS_MAP: &str = "hists";
/// The frozen .rodata with the filters, so `stats` can show them.
pub const CONFIG_MAP: &str = "config";
pub const CGROUP_MAP: &str = "cgroup_filter";
const PROG_ENTER_PIN: &str = "prog_enter";
const LINK_ENTER_PIN: &str = "link_enter";

pub const MAX_SYSCALLS: u32 = latency_limits::LAT_MAX_SYSCALLS.0;
const COMM_LEN: usize = latency_limits::LAT_COMM_LEN.0 as usize;
/// The histogram slot of per-function latency.
const FUNCTION_SLOT: u32 = 0;

/// How the program hooks in; shown by `stats` and in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// BTF-typed raw tracepoints on raw_syscalls:sys_enter/sys_exit.
    TpBtf,
    /// Raw tracepoints on the same events, for kernels without tp_btf.
    RawTp,
    /// BPF trampolines on a kernel function's entry and return.
    Fentry,
    /// kprobe and kretprobe on a kernel function.
    Kprobe,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::TpBtf => "tp_btf",
            Method::RawTp => "raw_tp",
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
        }
    }

    /// The pair of hooks, as an error message names them.
    fn hooks(self) -> &'static str {
        match self {
            Method::TpBtf => "tp_btf sys_enter/sys_exit",
            Method::RawTp => "raw_tp sys_enter/sys_exit",
            Method::Fentry => "fentry/fexit",
            Method::Kprobe => "kprobe/kretprobe",
        }
    }

    fn from_prog_type(prog_type: u32) -> Option<Method> {
        match prog_type {
            libbpf_sys::BPF_PROG_TYPE_TRACING => Some(Method::TpBtf),
            libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT => Some(Method::RawTp),
            _ => None,
        }
    }
}

/// Methods for syscalls, in the order they are tried.
pub const SYSCALL_METHODS: [Method; 2] = [Method::TpBtf, Method::RawTp];
/// Methods for a kernel function, in the order they are tried.
pub const FUNCTION_METHODS: [Method; 2] = [Method::Fentry, Method::Kprobe];

/// `--method`: one method forced, or probing among the tracepoint pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodChoice {
    /// fentry/fexit (--function only)
    Fentry,
    /// kprobe/kretprobe (--function only)
    Kprobe,
    /// tp_btf, else raw_tp (syscalls only)
    Tracepoint,
    /// tp_btf alone (syscalls only)
    TpBtf,
    /// raw_tp alone (syscalls only)
    RawTp,
}

impl MethodChoice {
    /// The methods to try for syscalls, in order.
    pub fn for_syscalls(choice: Option<MethodChoice>) -> Result<Vec<Method>, Failure> {
        match choice {
            None | Some(MethodChoice::Tracepoint) => Ok(SYSCALL_METHODS.to_vec()),
            Some(MethodChoice::TpBtf) => Ok(vec![Method::TpBtf]),
            Some(MethodChoice::RawTp) => Ok(vec![Method::RawTp]),
            Some(other) => Err(Failure::new(format!(
                "--method {}: syscall latency is measured at the raw_syscalls tracepoints",
                other.name()
            ))
            .hint("use --method tracepoint, tp-btf or raw-tp; fentry and kprobe measure a kernel function: meshbpf latency --function NAME")),
        }
    }

    /// The methods to try for a kernel function, in order.
    pub fn for_function(choice: Option<MethodChoice>) -> Result<Vec<Method>, Failure> {
        match choice {
            None => Ok(FUNCTION_METHODS.to_vec()),
            Some(MethodChoice::Fentry) => Ok(vec![Method::Fentry]),
            Some(MethodChoice::Kprobe) => Ok(vec![Method::Kprobe]),
            Some(other) => Err(Failure::new(format!(
                "--method {}: a kernel function has no tracepoint of its own",
                other.name()
            ))
            .hint("use --method fentry or kprobe with --function, or leave --method out to probe both")),
        }
    }

    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// What is traced, fixed at load: filters that are off cost nothing.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// A process (thread group) id.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// A cgroup v2 directory; its descendants count too.
    pub cgroup: Option<PathBuf>,
    /// Syscall numbers; empty means all.
    pub syscalls: Vec<u32>,
}

/// The filters as `stats` shows them, read back from the pinned config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActiveFilters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<String>,
}

/// The cgroup of `--cgroup`, open: its fd goes into the cgroup_filter map.
struct Cgroup {
    dir: File,
    id: u64,
}

fn open_cgroup(path: &Path) -> Result<Cgroup> {
    let fail = |why: String| {
        Failure::new(format!("--cgroup {}: {why}", path.display()))
            .hint("give a cgroup v2 directory, e.g. /sys/fs/cgroup/system.slice/ssh.service")
    };
    let (dir, id) = mounts::open_cgroup2(path).map_err(fail)?;
    Ok(Cgroup { dir, id })
}

impl Filters {
    fn config(&self, cgroup: Option<&Cgroup>) -> Result<latency_config> {
        let mut config = latency_config::default();
        if !self.syscalls.is_empty() {
            config.filters |= latency_filters::LAT_FILTER_SYSCALLS.0;
            for &nr in &self.syscalls {
                if nr >= MAX_SYSCALLS {
                    return Err(Failure::new(format!(
                        "syscall number {nr} is beyond the {MAX_SYSCALLS} that syscall_latency keeps histograms for"
                    ))
                    .into());
                }
                config.syscall_mask[(nr / 64) as usize] |= 1 << (nr % 64);
            }
        }
        if let Some(pid) = self.pid {
            config.filters |= latency_filters::LAT_FILTER_PID.0;
            config.pid = pid;
        }
        if let Some(comm) = &self.comm {
            if comm.is_empty() || comm.len() >= COMM_LEN {
                return Err(Failure::new(format!(
                    "--comm '{comm}' cannot match: the kernel keeps 1 to {} bytes of a command name",
                    COMM_LEN - 1
                ))
                .hint("give the name as `ps -o comm` shows it (the first 15 bytes)")
                .into());
            }
            config.filters |= latency_filters::LAT_FILTER_COMM.0;
            for (slot, byte) in config.comm.iter_mut().zip(comm.bytes()) {
                *slot = byte as _;
            }
        }
        if let Some(cgroup) = cgroup {
            config.filters |= latency_filters::LAT_FILTER_CGROUP.0;
            config.cgroup_id = cgroup.id;
        }
        Ok(config)
    }
}

fn active_filters(config: &latency_config) -> ActiveFilters {
    let on = |filter: latency_filters| config.filters & filter.0 != 0;
    let comm: Vec<u8> = config
        .comm
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    ActiveFilters {
        pid: on(latency_filters::LAT_FILTER_PID).then_some(config.pid),
        comm: on(latency_filters::LAT_FILTER_COMM)
            .then(|| String::from_utf8_lossy(&comm).into_owned()),
        cgroup_id: on(latency_filters::LAT_FILTER_CGROUP).then_some(config.cgroup_id),
        syscalls: (0..MAX_SYSCALLS)
            .filter(|nr| {
                on(latency_filters::LAT_FILTER_SYSCALLS)
                    && config.syscall_mask[(nr / 64) as usize] & (1 << (nr % 64)) != 0
            })
            .map(syscalls::display_name)
            .collect(),
    }
}

/// Opens and loads the pair of programs of `method`, unattached, with the
/// filters in .rodata. `function` is the target of fentry/fexit.
fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    method: Method,
    function: Option<&str>,
    config: latency_config,
    opts: &OpenOpts,
) -> Result<SyscallLatencySkel<'obj>> {
    verifier::load(&format!("{PROGRAM} ({})", method.hooks()), || {
        let mut open =
            skel::SyscallLatencySkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        let progs = &mut open.progs;
        for (prog, of) in [
            (&mut progs.lat_enter_btf, Method::TpBtf),
            (&mut progs.lat_exit_btf, Method::TpBtf),
            (&mut progs.lat_enter_raw, Method::RawTp),
            (&mut progs.lat_exit_raw, Method::RawTp),
            (&mut progs.lat_fentry, Method::Fentry),
            (&mut progs.lat_fexit, Method::Fentry),
            (&mut progs.lat_kprobe, Method::Kprobe),
            (&mut progs.lat_kretprobe, Method::Kprobe),
        ] {
            prog.set_autoload(of == method);
            if of == Method::Fentry && method == Method::Fentry {
                prog.set_attach_target(0, function.map(str::to_string))?;
            }
        }
        let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
            libbpf_rs::Error::from(std::io::Error::other(".rodata is not memory-mapped"))
        })?;
        rodata.lat_config = config;
        open.load()
    })
}

/// The (enter, exit) programs of a loaded method.
fn programs<'a, 'obj>(
    skel: &'a SyscallLatencySkel<'obj>,
    method: Method,
) -> (&'a ProgramMut<'obj>, &'a ProgramMut<'obj>) {
    let p = &skel.progs;
    match method {
        Method::TpBtf => (&p.lat_enter_btf, &p.lat_exit_btf),
        Method::RawTp => (&p.lat_enter_raw, &p.lat_exit_raw),
        Method::Fentry => (&p.lat_fentry, &p.lat_fexit),
        Method::Kprobe => (&p.lat_kprobe, &p.lat_kretprobe),
    }
}

/// The filters checked and ready to load: a bad one fails before any
/// method is tried.
pub struct Prepared {
    config: latency_config,
    cgroup: Option<Cgroup>,
}

pub fn prepare(filters: &Filters) -> Result<Prepared> {
    let cgroup = filters.cgroup.as_deref().map(open_cgroup).transpose()?;
    let config = filters.config(cgroup.as_ref())?;
    Ok(Prepared { config, cgroup })
}

/// A loaded and hooked program pair. Dropped, it closes the links' fds: for
/// links never pinned they are the last references, and the kernel releases
/// the links before close returns (tracing and perf-event links have no
/// BPF_LINK_DETACH).
struct Running<'obj> {
    skel: SyscallLatencySkel<'obj>,
    method: Method,
    enter: Link,
    exit: Link,
}

/// Loads `method`'s programs, fills the cgroup filter and hooks them.
fn start<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    method: Method,
    function: Option<&str>,
    prepared: &Prepared,
    opts: &OpenOpts,
) -> Result<Running<'obj>> {
    let skel = load(object, method, function, prepared.config, opts)?;
    if let Some(cgroup) = &prepared.cgroup {
        let fd = cgroup.dir.as_raw_fd() as u32;
        skel.maps
            .cgroup_filter
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .context("setting the cgroup filter")?;
    }
    let target = function.unwrap_or("raw_syscalls");
    let hook = |prog: &ProgramMut<'_>, ret: bool| -> Result<Link> {
        let link = match method {
            Method::Kprobe => prog.attach_kprobe(ret, target).map_err(explain_kprobe),
            _ => prog.attach().map_err(anyhow::Error::from),
        };
        link.with_context(|| format!("attaching {} to {target}", method.hooks()))
    };
    let (enter_prog, exit_prog) = programs(&skel, method);
    let enter = hook(enter_prog, false)?;
    let exit = hook(exit_prog, true)?;
    Ok(Running {
        skel,
        method,
        enter,
        exit,
    })
}

/// Where the kernel lists its kprobe PMU; libbpf falls back to tracefs'
/// kprobe_events without it.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// A kprobe attach fails with a bare ENOENT when the kernel has no kprobes
/// at all: say so.
fn explain_kprobe(err: libbpf_rs::Error) -> anyhow::Error {
    let err = anyhow::Error::from(err);
    if errno_of(&err) == Some(libc::ENOENT) && !Path::new(KPROBE_PMU).exists() {
        return err.context(format!(
            "this kernel has no kprobes ({KPROBE_PMU} does not exist: built without CONFIG_KPROBES)"
        ));
    }
    err
}

/// Tries `methods` in order and hands the first that loads and hooks to
/// `run`; the others' failures make the error when none does.
fn with_first<T>(
    what: &str,
    methods: &[Method],
    function: Option<&str>,
    prepared: &Prepared,
    btf: Option<&Path>,
    run: impl FnOnce(Running<'_>) -> Result<T>,
) -> Result<T> {
    // A bad --btf file is the operator's to fix, not one method's failure.
    let opts = OpenOpts::new(btf)?;
    let mut failures = Vec::new();
    for &method in methods {
        let mut object = MaybeUninit::uninit();
        match start(&mut object, method, function, prepared, &opts) {
            Ok(running) => return run(running),
            Err(err) => failures.push((method, err)),
        };
    }
    Err(refused(what, failures))
}

/// Why each method failed, as one error; a single forced method keeps its
/// own error chain.
fn refused(what: &str, failures: Vec<(Method, anyhow::Error)>) -> anyhow::Error {
    if failures.len() == 1 {
        let (method, err) = failures.into_iter().next().expect("one failure");
        return err.context(format!("measuring {what} with {}", method.hooks()));
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|(m, err)| format!("{}: {err:#}", m.hooks()))
        .collect();
    Failure::new(format!(
        "the kernel refused every way to measure {what}: {}",
        reasons.join("; ")
    ))
    .hint("fentry/fexit need BPF trampolines, kprobes a kernel with CONFIG_KPROBES; run with -v for libbpf's output")
    .into()
}

/// Loads, hooks and pins the syscall histograms into `dir`, trying
/// `methods` in order; the `link` pin goes last and commits. Returns the
/// method that runs. On failure nothing stays pinned or hooked.
pub fn attach(
    dir: &AttachmentDir,
    methods: &[Method],
    prepared: &Prepared,
    btf: Option<&Path>,
) -> Result<Method> {
    with_first("syscall latency", methods, None, prepared, btf, |running| {
        if let Err(err) = pin(&running, dir) {
            if dir.exists() {
                dir.unpin()?;
            }
            return Err(err);
        }
        Ok(running.method)
    })
}

fn pin(running: &Running<'_>, dir: &AttachmentDir) -> Result<()> {
    let skel = &running.skel;
    let (enter, exit) = programs(skel, running.method);
    dir.create()?;
    bpfobj::pin(skel.maps.hists.as_fd(), &dir.map(HISTS_MAP))?;
    bpfobj::pin(skel.maps.rodata.as_fd(), &dir.map(CONFIG_MAP))?;
    bpfobj::pin(skel.maps.cgroup_filter.as_fd(), &dir.map(CGROUP_MAP))?;
    bpfobj::pin(enter.as_fd(), &dir.pin(PROG_ENTER_PIN))?;
    bpfobj::pin(exit.as_fd(), &dir.prog())?;
    bpfobj::pin(running.enter.as_fd(), &dir.pin(LINK_ENTER_PIN))?;
    bpfobj::pin(running.exit.as_fd(), &dir.link())
}

/// What a transient per-function measurement saw.
pub struct Measured {
    pub method: Method,
    pub histogram: Histogram,
}

/// Hooks `function` with the first of `methods` the kernel accepts, runs
/// `wait`, reads the histogram and detaches, also when `wait` fails.
pub fn measure_function(
    function: &str,
    methods: &[Method],
    prepared: &Prepared,
    btf: Option<&Path>,
    wait: impl FnOnce() -> Result<()>,
) -> Result<Measured> {
    check_function(function)?;
    let what = format!("the latency of {function}");
    with_first(&what, methods, Some(function), prepared, btf, |running| {
        let waited = wait();
        let histogram = read_slot(&running.skel.maps.hists, FUNCTION_SLOT);
        let method = running.method;
        drop(running);
        waited?;
        Ok(Measured {
            method,
            histogram: histogram?,
        })
    })
}

const KALLSYMS: &str = "/proc/kallsyms";

/// Both methods hook kernel text symbols: a name that is none fails here,
/// with a clear message, rather than as ESRCH from one and ENOENT from the
/// other.
fn check_function(function: &str) -> Result<()> {
    let symbols =
        std::fs::read_to_string(KALLSYMS).with_context(|| format!("reading {KALLSYMS}"))?;
    let is_text = |line: &str| {
        let mut fields = line.split_whitespace().skip(1);
        matches!(fields.next(), Some("t" | "T")) && fields.next() == Some(function)
    };
    if symbols.lines().any(is_text) {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{function} is not a function of the running kernel (not a text symbol in {KALLSYMS})"
    ))
    .hint(format!(
        "look for the right name: grep -w -i '{function}' {KALLSYMS}; static functions the compiler inlined cannot be traced"
    ))
    .into())
}

/// One histogram slot, summed over CPUs.
fn read_slot(map: &dyn MapCore, slot: u32) -> Result<Histogram> {
    let mut sum = Histogram::default();
    for cpu in maps::read_per_cpu::<latency_hist>(map, slot)? {
        sum.add(cpu.count, cpu.total_ns, &cpu.buckets);
    }
    Ok(sum)
}

/// Every syscall with a count in the pinned histograms, by number.
pub fn read(dir: &AttachmentDir) -> Result<Vec<(u32, Histogram)>> {
    let map = maps::open_pinned_map(dir, HISTS_MAP)?;
    let mut found = Vec::new();
    for nr in 0..map.max_entries() {
        let histogram = read_slot(&map, nr)?;
        if histogram.count > 0 {
            found.push((nr, histogram));
        }
    }
    Ok(found)
}

/// The host-wide attachment as `stats` (and `health`) show it.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyAttachment {
    pub program: &'static str,
    pub method: Method,
    /// RFC 3339; the kernel's load time of the programs.
    pub attached_at: String,
    pub prog_ids: [u32; 2],
    pub link_ids: [u32; 2],
    pub filters: ActiveFilters,
    pub pin_path: String,
}

/// Reads a committed attachment back from its pins and the kernel.
pub fn inspect(dir: &AttachmentDir) -> Result<LatencyAttachment> {
    let mut prog_ids = [0; 2];
    let mut link_ids = [0; 2];
    let mut method = None;
    let mut load_time_ns = 0;
    for (i, pin) in [dir.pin(LINK_ENTER_PIN), dir.link()].iter().enumerate() {
        let fd = bpfobj::open_pinned(pin)?;
        let link = bpfobj::link_info(fd.as_fd())
            .with_context(|| format!("inspecting {}", pin.display()))?;
        let prog = bpfobj::prog_info_by_id(link.prog_id)?;
        method = Method::from_prog_type(prog.prog_type);
        load_time_ns = prog.load_time_ns;
        prog_ids[i] = link.prog_id;
        link_ids[i] = link.id;
    }
    let method = method.ok_or_else(|| {
        Failure::new(format!(
            "{} holds a link to a program that is not syscall_latency's",
            dir.link().display()
        ))
        .hint("meshbpf detach --latency removes it")
    })?;
    let config_map = maps::open_pinned_map(dir, CONFIG_MAP)?;
    let bytes = config_map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading {}", dir.map(CONFIG_MAP).display()))?
        .unwrap_or_default();
    let mut rodata: skel::types::rodata = pod::zeroed();
    plain::copy_from_bytes(&mut rodata, &bytes)
        .map_err(|e| anyhow::anyhow!("the pinned config has an unexpected size: {e:?}"))?;
    Ok(LatencyAttachment {
        program: PROGRAM,
        method,
        attached_at: clock::rfc3339(clock::boottime_to_wall(load_time_ns)),
        prog_ids,
        link_ids,
        filters: active_filters(&rodata.lat_config),
        pin_path: dir.path.display().to_string(),
    })
}

/// The filters in words, for attach and stats: empty when it traces everything.
pub fn describe_filters(a: &LatencyAttachment) -> String {
    let f = &a.filters;
    let mut parts = Vec::new();
    if let Some(pid) = f.pid {
        parts.push(format!("pid {pid}"));
    }
    if let Some(comm) = &f.comm {
        parts.push(format!("comm {comm}"));
    }
    if let Some(id) = f.cgroup_id {
        parts.push(format!("cgroup id {id}"));
    }
    if !f.syscalls.is_empty() {
        parts.push(format!("syscalls {}", f.syscalls.join(",")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", only {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_header() {
        assert_eq!(MAX_SYSCALLS, 512);
        assert_eq!(COMM_LEN, 16);
        assert_eq!(
            std::mem::size_of::<latency_hist>(),
            (2 + histogram::BUCKETS) * 8
        );
    }

    #[test]
    fn filters_become_the_config_and_read_back() {
        let filters = Filters {
            pid: Some(4242),
            comm: Some("nginx".into()),
            cgroup: None,
            syscalls: vec![0, 63, 64, 511],
        };
        let config = filters.config(None).unwrap();
        assert_eq!(
            config.filters,
            latency_filters::LAT_FILTER_PID.0
                | latency_filters::LAT_FILTER_COMM.0
                | latency_filters::LAT_FILTER_SYSCALLS.0
        );
        assert_eq!(config.syscall_mask[0], 1 | 1 << 63);
        assert_eq!(config.syscall_mask[1], 1);
        assert_eq!(config.syscall_mask[7], 1 << 63);
        let shown = active_filters(&config);
        assert_eq!(shown.pid, Some(4242));
        assert_eq!(shown.comm.as_deref(), Some("nginx"));
        assert_eq!(shown.cgroup_id, None);
        assert_eq!(shown.syscalls.len(), 4);
        assert_eq!(shown.syscalls[3], "syscall_511");
    }

    #[test]
    fn method_choices_fit_what_is_measured() {
        assert_eq!(MethodChoice::for_syscalls(None).unwrap(), SYSCALL_METHODS);
        assert_eq!(
            MethodChoice::for_syscalls(Some(MethodChoice::RawTp)).unwrap(),
            [Method::RawTp]
        );
        assert_eq!(MethodChoice::for_function(None).unwrap(), FUNCTION_METHODS);
        assert_eq!(
            MethodChoice::for_function(Some(MethodChoice::Kprobe)).unwrap(),
            [Method::Kprobe]
        );
        let err = MethodChoice::for_syscalls(Some(MethodChoice::Fentry)).unwrap_err();
        assert!(err.to_string().starts_with("--method fentry: "), "{err}");
        let err = MethodChoice::for_function(Some(MethodChoice::TpBtf)).unwrap_err();
        assert!(err.to_string().starts_with("--method tp-btf: "), "{err}");
    }

    #[test]
    fn no_filters_means_everything_and_nothing_to_check() {
        let config = Filters::default().config(None).unwrap();
        assert_eq!(config.filters, 0);
        assert_eq!(active_filters(&config), ActiveFilters::default());
    }

    #[test]
    fn impossible_filters_are_refused() {
        let long = Filters {
            comm: Some("a-name-longer-than-15".into()),
            ..Filters::default()
        };
        let err = long.config(None).unwrap_err().to_string();
        assert!(err.contains("1 to 15 bytes"), "{err}");
        let beyond = Filters {
            syscalls: vec![512],
            ..Filters::default()
        };
        assert!(beyond.config(None).is_err());
        let err = open_cgroup(Path::new("/proc")).err().unwrap();
        assert!(format!("{err:#}").contains("not a directory of a cgroup v2 hierarchy"));
    }
}
