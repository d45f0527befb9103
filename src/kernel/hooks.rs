//! Attaching an already loaded program, by fd, to hooks outside the network
//! stack: tracepoints, raw tracepoints, BTF-typed tracing hooks, cgroups and
//! kprobes. Each returns a bpf_link fd, which detaches when its last fd or
//! pin goes, so a command that dies before pinning leaves nothing attached.

use std::fs::{self, File};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::Failure;
use crate::kernel::{ffi, tracefs};

/// A bpf_link from `prog` to `target` (an fd, or 0 where the program's
/// attach type names the target).
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: i32,
    attach_type: libbpf_sys::bpf_attach_type,
) -> io::Result<OwnedFd> {
    // SAFETY: fds we hold and no options; the call returns a fresh fd or
    // -errno.
    unsafe {
        ffi::fd(libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            target,
            attach_type,
            std::ptr::null(),
        ))
    }
}

/// A perf event that runs BPF programs, opened on all CPUs at once (the
/// kernel runs tracepoint and kprobe programs wherever the event fires).
pub fn perf_event_open(attr: &libbpf_sys::perf_event_attr) -> io::Result<OwnedFd> {
    // SAFETY: attr is a complete perf_event_attr of the size it declares;
    // the kernel only reads it, and any kprobe name it points to (checked
    // copies, never writes). The syscall returns a fresh fd or -1.
    unsafe {
        ffi::os_fd(libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const libbpf_sys::perf_event_attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            libbpf_sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        ))
    }
}

fn perf_attr(kind: u32, config: u64) -> libbpf_sys::perf_event_attr {
    libbpf_sys::perf_event_attr {
        type_: kind,
        size: mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config,
        ..Default::default()
    }
}

/// Runs `prog` on a perf event through a BPF_PERF_EVENT link, which holds
/// the event: the event fd can go once the link exists.
fn attach_perf_event(prog: BorrowedFd<'_>, event: &OwnedFd) -> io::Result<OwnedFd> {
    link_create(prog, event.as_raw_fd(), libbpf_sys::BPF_PERF_EVENT)
}

/// A `tp/<category>/<name>` program on its tracepoint, whose id is in
/// `tracefs`.
pub fn attach_tracepoint(
    prog: BorrowedFd<'_>,
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<OwnedFd> {
    let id = tracefs::tracepoint_id(tracefs, category, name)?;
    let event = perf_event_open(&perf_attr(libbpf_sys::PERF_TYPE_TRACEPOINT, id))
        .with_context(|| format!("opening a perf event on tracepoint {category}/{name}"))?;
    attach_perf_event(prog, &event)
        .with_context(|| format!("attaching to tracepoint {category}/{name}"))
}

/// A raw tracepoint by name, or with `None`, a BTF-typed program (tp_btf,
/// fentry, fexit, fmod_ret, lsm) on the target it was loaded for.
pub fn attach_raw(prog: BorrowedFd<'_>, tracepoint: Option<&str>) -> Result<OwnedFd> {
    let name = tracepoint.map(std::ffi::CString::new).transpose()?;
    // SAFETY: a NUL-terminated name or null, and a program fd we hold; the
    // call returns a fresh fd or -errno.
    unsafe {
        ffi::fd(libbpf_sys::bpf_raw_tracepoint_open(
            name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
            prog.as_raw_fd(),
        ))
    }
    .with_context(|| match tracepoint {
        Some(tp) => format!("attaching to raw tracepoint {tp}"),
        None => "attaching to the program's BTF target".to_string(),
    })
}

/// A cgroup_skb program on a cgroup v2 directory.
pub fn attach_cgroup(
    prog: BorrowedFd<'_>,
    cgroup: &Path,
    attach_type: libbpf_sys::bpf_attach_type,
) -> Result<OwnedFd> {
    let dir = File::open(cgroup).map_err(|e| {
        anyhow::Error::new(e).context(
            Failure::new(format!("cannot open cgroup {}", cgroup.display()))
                .hint("pass the directory of a cgroup v2 group, e.g. /sys/fs/cgroup/unified/NAME (cgroup2 mount points: `findmnt -t cgroup2`)"),
        )
    })?;
    link_create(prog, dir.as_raw_fd(), attach_type).map_err(|e| {
        let err = anyhow::Error::new(e);
        if err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            == Some(libc::EBADF)
        {
            return err.context(
                Failure::new(format!(
                    "{} is not a cgroup v2 directory",
                    cgroup.display()
                ))
                .hint("cgroup_skb programs attach to cgroup v2 groups; cgroup2 mount points: `findmnt -t cgroup2`"),
            );
        }
        err.context(format!("attaching to cgroup {}", cgroup.display()))
    })
}

/// Where the kernel publishes the kprobe PMU's perf type.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// A kprobe (or kretprobe) on a kernel function, through the kprobe PMU.
pub fn attach_kprobe(prog: BorrowedFd<'_>, function: &str, retprobe: bool) -> Result<OwnedFd> {
    let pmu = Path::new(KPROBE_PMU);
    let kind = fs::read_to_string(pmu.join("type")).map_err(|e| {
        anyhow::Error::new(e).context(
            Failure::new(format!(
                "this kernel cannot attach kprobes: it has no kprobe PMU at {KPROBE_PMU} (kernels built without CONFIG_KPROBES have none)"
            ))
            .hint("use a tracepoint, raw_tp or tp_btf program for this hook, or run on a kernel with kprobes"),
        )
    })?;
    let kind: u32 = kind.trim().parse().context("reading the kprobe PMU type")?;
    let retprobe_bit = if retprobe {
        // "config:N" names the config bit that makes a kretprobe.
        let format = fs::read_to_string(pmu.join("format/retprobe"))
            .context("reading the kprobe PMU's retprobe bit")?;
        let bit: u32 = format
            .trim()
            .strip_prefix("config:")
            .and_then(|b| b.parse().ok())
            .with_context(|| format!("unexpected kprobe retprobe format '{}'", format.trim()))?;
        1u64 << bit
    } else {
        0
    };
    let name = std::ffi::CString::new(function)?;
    let mut attr = perf_attr(kind, retprobe_bit);
    // config1 carries the function name, config2 the offset into it.
    attr.__bindgen_anon_3.config1 = name.as_ptr() as u64;
    let event =
        perf_event_open(&attr).with_context(|| format!("opening a kprobe on {function}"))?;
    attach_perf_event(prog, &event).with_context(|| format!("attaching to kprobe {function}"))
}
