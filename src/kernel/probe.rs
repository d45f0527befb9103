//! What the running kernel lets meshbpf run, found out by doing it: a
//! minimal program of each kind (`r0 = <pass>; exit`) is loaded from raw
//! instructions and, where loading is not the whole story, attached to a
//! hook nothing else uses (lo of a throwaway network namespace, a fresh
//! cgroup, a test function), then let go. Loading alone cannot tell "this
//! kernel refuses the program" from "it loads but cannot be attached"; the
//! stage and errno of the refusal can.

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde::Serialize;

use crate::error::errno_of;
use crate::kernel::btf::{KernelBtf, KERNEL_BTF};
use crate::kernel::netdev::Interface;
use crate::kernel::tc;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpfobj, caps, ffi, hooks, mounts};
use crate::proto::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
    Tcx,
    Tracepoint,
    RawTp,
    TpBtf,
    Kprobe,
    Fentry,
    Lsm,
    CgroupSkb,
    Ringbuf,
    LpmTrie,
}

impl Hook {
    pub const ALL: [Hook; 12] = [
        Hook::Xdp,
        Hook::Tc,
        Hook::Tcx,
        Hook::Tracepoint,
        Hook::RawTp,
        Hook::TpBtf,
        Hook::Kprobe,
        Hook::Fentry,
        Hook::Lsm,
        Hook::CgroupSkb,
        Hook::Ringbuf,
        Hook::LpmTrie,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
            Hook::Tcx => "tcx",
            Hook::Tracepoint => "tracepoint",
            Hook::RawTp => "raw_tp",
            Hook::TpBtf => "tp_btf",
            Hook::Kprobe => "kprobe",
            Hook::Fentry => "fentry",
            Hook::Lsm => "lsm",
            Hook::CgroupSkb => "cgroup_skb",
            Hook::Ringbuf => "ringbuf",
            Hook::LpmTrie => "lpm_trie",
        }
    }
}

/// How far a probe got before the kernel (or the machine) said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Preparing the hook to attach to (a namespace, a cgroup, a BTF id).
    Setup,
    Load,
    Attach,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Setup => "setup",
            Stage::Load => "load",
            Stage::Attach => "attach",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub stage: Stage,
    pub errno: Option<i32>,
    pub reason: String,
}

impl Refusal {
    fn new(stage: Stage, errno: Option<i32>, reason: impl Into<String>) -> Self {
        Refusal {
            stage,
            errno,
            reason: reason.into(),
        }
    }

    fn errno(stage: Stage, errno: i32, what: &str) -> Self {
        Refusal::new(
            stage,
            Some(errno),
            format!("{what} failed with {}", errno_text(errno)),
        )
    }
}

/// How the hook was shown to work, or why it does not.
pub type Outcome = Result<String, Refusal>;

/// "EPERM"
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", Errno::from_raw(errno))
}

pub fn errno_text(errno: i32) -> String {
    format!("{} ({})", errno_name(errno), Errno::from_raw(errno).desc())
}

pub fn probe(hook: Hook) -> Outcome {
    match hook {
        Hook::Xdp => in_throwaway_netns(xdp_on),
        Hook::Tc => in_throwaway_netns(tc_on),
        Hook::Tcx => in_throwaway_netns(tcx_on),
        Hook::Tracepoint => tracepoint(),
        Hook::RawTp => raw_tp(),
        Hook::TpBtf => by_btf_id(hook, "btf_trace_sched_switch", libbpf_sys::BTF_KIND_TYPEDEF),
        Hook::Kprobe => kprobe(),
        Hook::Fentry => by_btf_id(hook, TEST_FUNCTION, libbpf_sys::BTF_KIND_FUNC),
        Hook::Lsm => by_btf_id(hook, "bpf_lsm_file_open", libbpf_sys::BTF_KIND_FUNC),
        Hook::CgroupSkb => cgroup_skb(),
        Hook::Ringbuf => ringbuf(),
        Hook::LpmTrie => lpm_trie(),
    }
}

/// Whether the kernel compiles programs to native code, asked of a loaded
/// socket filter: the sysctl is not visible outside the initial network
/// namespace. None when not even that loads.
pub fn jit_compiles() -> Option<bool> {
    let prog = load(&Minimal::new(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, 0)).ok()?;
    let info = bpfobj::prog_info(prog.as_fd()).ok()?;
    Some(info.jited_len > 0)
}

/// A kernel function that exists to be traced (net/bpf/test_run.c).
const TEST_FUNCTION: &str = "bpf_fentry_test1";
/// A tracepoint every kernel has.
const TRACEPOINT: (&str, &str) = ("sched", "sched_switch");

/// What a minimal program is loaded as.
struct Minimal {
    prog_type: libbpf_sys::bpf_prog_type,
    expected_attach_type: libbpf_sys::bpf_attach_type,
    attach_btf_id: u32,
    /// What it returns: the hook's "carry on".
    ret: i32,
    /// What loading it takes besides CAP_BPF, to tell a missing privilege
    /// from a kernel that refuses.
    tracing: bool,
}

impl Minimal {
    fn new(prog_type: libbpf_sys::bpf_prog_type, ret: i32) -> Self {
        Minimal {
            prog_type,
            expected_attach_type: 0,
            attach_btf_id: 0,
            ret,
            tracing: false,
        }
    }

    fn attach_type(mut self, attach_type: libbpf_sys::bpf_attach_type) -> Self {
        self.expected_attach_type = attach_type;
        self
    }

    /// fentry/fexit and LSM programs run from a BPF trampoline patched
    /// into the kernel function; tp_btf programs do not.
    fn uses_trampoline(&self) -> bool {
        self.prog_type == libbpf_sys::BPF_PROG_TYPE_LSM
            || (self.prog_type == libbpf_sys::BPF_PROG_TYPE_TRACING
                && self.expected_attach_type != libbpf_sys::BPF_TRACE_RAW_TP)
    }

    fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }
}

const TC_ACT_OK: i32 = 0;
const TCX_NEXT: i32 = -1;
const CGROUP_SKB_ALLOW: i32 = 1;

fn insn(code: u32, dst: u8, imm: i32) -> libbpf_sys::bpf_insn {
    libbpf_sys::bpf_insn {
        code: code as u8,
        _bitfield_align_1: [],
        _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(dst, 0),
        off: 0,
        imm,
    }
}

/// Loads `r0 = ret; exit`. On failure, the reason carries the errno and the
/// verifier's last word, if it said anything.
fn load(spec: &Minimal) -> Result<OwnedFd, Refusal> {
    let insns = [
        insn(
            libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K,
            libbpf_sys::BPF_REG_0 as u8,
            spec.ret,
        ),
        insn(libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT, 0, 0),
    ];
    let mut log = vec![0u8; 4096];
    let mut opts: libbpf_sys::bpf_prog_load_opts = ffi::opts();
    opts.expected_attach_type = spec.expected_attach_type;
    opts.attach_btf_id = spec.attach_btf_id;
    // Level 0 with a buffer: libbpf retries with a log only on failure.
    opts.log_buf = log.as_mut_ptr().cast();
    opts.log_size = log.len() as u32;
    // SAFETY: the instructions and the log buffer, of the length the options
    // say, outlive the call, which returns a fresh fd or -errno.
    unsafe {
        ffi::fd(libbpf_sys::bpf_prog_load(
            spec.prog_type,
            c"meshbpf_probe".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        ))
    }
    .map_err(|e| load_refusal(spec, errno(&e), &log))
}

fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

fn load_refusal(spec: &Minimal, errno: i32, log: &[u8]) -> Refusal {
    let mut reason = format!("BPF_PROG_LOAD failed with {}", errno_text(errno));
    let log = String::from_utf8_lossy(log);
    match log
        .trim_end_matches('\0')
        .lines()
        .rfind(|l| !l.trim().is_empty())
    {
        Some(last) => reason.push_str(&format!("; the verifier said: {}", last.trim())),
        None => reason.push_str(", with no verifier log"),
    }
    if errno == libc::EPERM {
        let mut needs = vec![caps::BPF];
        if spec.tracing {
            needs.push(caps::PERFMON);
        }
        reason.push_str(&eperm_cause(&needs, spec.uses_trampoline()));
    }
    Refusal::new(Stage::Load, Some(errno), reason)
}

/// Why the kernel said EPERM: a capability this process lacks, or, with
/// all of them present, the kernel itself.
fn eperm_cause(needs: &[caps::Need], trampoline: bool) -> String {
    match caps::require("this", needs) {
        Err(missing) => format!(": {missing}"),
        Ok(()) if trampoline => ", although this process has the capabilities it needs: \
this kernel refuses programs that attach through a BPF trampoline"
            .into(),
        Ok(()) => ", although this process has the capabilities it needs (see the lockdown and LSM checks)"
            .into(),
    }
}

/// A bpf_link from `prog` to `target` (an fd, or 0 for BTF-id programs),
/// let go at once.
fn link(
    prog: &OwnedFd,
    target: i32,
    attach_type: libbpf_sys::bpf_attach_type,
    what: &str,
) -> Result<(), Refusal> {
    hooks::link_create(prog.as_fd(), target, attach_type)
        .map(drop)
        .map_err(|e| Refusal::errno(Stage::Attach, errno(&e), what))
}

fn attach_refusal(err: &anyhow::Error, what: &str) -> Refusal {
    match errno_of(err) {
        Some(errno) => Refusal::errno(Stage::Attach, errno, what),
        None => Refusal::new(Stage::Attach, None, format!("{what} failed: {err:#}")),
    }
}

/// Runs `probe` on a thread of its own in a new network namespace, whose
/// loopback is an interface nobody else uses. The namespace, and whatever
/// was attached in it, goes away with the thread.
fn in_throwaway_netns(probe: fn(&Interface) -> Outcome) -> Outcome {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| {
                Refusal::errno(
                    Stage::Setup,
                    errno as i32,
                    "creating a throwaway network namespace to attach in (needs CAP_SYS_ADMIN)",
                )
            })?;
            let index = nix::net::if_::if_nametoindex("lo").map_err(|errno| {
                Refusal::errno(
                    Stage::Setup,
                    errno as i32,
                    "finding lo in the new namespace",
                )
            })?;
            probe(&Interface {
                name: "lo".into(),
                index,
            })
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

const ON_LO: &str = "lo of a throwaway network namespace";

fn xdp_on(lo: &Interface) -> Outcome {
    let prog = load(&Minimal::new(
        libbpf_sys::BPF_PROG_TYPE_XDP,
        libbpf_sys::XDP_PASS as i32,
    ))?;
    xdp::create_link(prog_fd(&prog), lo, XdpMode::Skb)
        .map_err(|e| attach_refusal(&e, "attaching an XDP link"))?;
    Ok(format!(
        "loaded and attached in generic (skb) mode to {ON_LO}; native mode is the driver's and attach checks it"
    ))
}

fn tc_on(lo: &Interface) -> Outcome {
    let prog = load(&Minimal::new(
        libbpf_sys::BPF_PROG_TYPE_SCHED_CLS,
        TC_ACT_OK,
    ))?;
    tc::attach_netlink(prog_fd(&prog), lo, Direction::Ingress)
        .map_err(|e| attach_refusal(&e, "adding a clsact ingress filter"))?;
    Ok(format!(
        "loaded and attached as a netlink clsact ingress filter to {ON_LO}"
    ))
}

/// Whether the kernel accepts tcx links on this interface.
pub fn tcx_available(iface: &Interface) -> bool {
    tcx_on(iface).is_ok()
}

/// Whether the kernel accepts tcx links on `iface`: attaches a program that
/// only says "next", and lets it go at once.
pub fn tcx_on(iface: &Interface) -> Outcome {
    let prog = load(
        &Minimal::new(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, TCX_NEXT)
            .attach_type(libbpf_sys::BPF_TCX_INGRESS),
    )?;
    tc::attach_tcx(prog_fd(&prog), iface, Direction::Ingress)
        .map_err(|e| attach_refusal(&e, "creating a tcx ingress link"))?;
    Ok(format!(
        "loaded and attached as a tcx ingress link to {}",
        if iface.name == "lo" {
            ON_LO
        } else {
            &iface.name
        }
    ))
}

fn prog_fd(prog: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(prog)
}

fn raw_tp() -> Outcome {
    let prog = load(&Minimal::new(libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT, 0).tracing())?;
    hooks::attach_raw(prog.as_fd(), Some(TRACEPOINT.1))
        .map_err(|e| attach_refusal(&e, "BPF_RAW_TRACEPOINT_OPEN"))?;
    Ok(format!(
        "loaded and attached to the raw tracepoint {}",
        TRACEPOINT.1
    ))
}

/// tp_btf, fentry and LSM: programs bound at load to a kernel type by its
/// BTF id, attached with a link on no target.
fn by_btf_id(hook: Hook, type_name: &str, kind: u32) -> Outcome {
    let btf = KernelBtf::open().map_err(|e| {
        Refusal::new(
            Stage::Setup,
            e.raw_os_error(),
            format!("no kernel BTF at {KERNEL_BTF} to find {type_name} in: {e}"),
        )
    })?;
    let id = btf.find(type_name, kind).ok_or_else(|| {
        Refusal::new(
            Stage::Setup,
            Some(libc::ENOENT),
            format!("this kernel's BTF has no {type_name}"),
        )
    })?;
    let (prog_type, attach_type) = match hook {
        Hook::TpBtf => (
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            libbpf_sys::BPF_TRACE_RAW_TP,
        ),
        Hook::Fentry => (
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            libbpf_sys::BPF_TRACE_FENTRY,
        ),
        _ => (libbpf_sys::BPF_PROG_TYPE_LSM, libbpf_sys::BPF_LSM_MAC),
    };
    let mut spec = Minimal::new(prog_type, 0)
        .attach_type(attach_type)
        .tracing();
    spec.attach_btf_id = id;
    let prog = load(&spec)?;
    link(&prog, 0, attach_type, "BPF_LINK_CREATE")?;
    Ok(format!("loaded and attached to {type_name} (BTF id {id})"))
}

/// A perf event with a BPF link on it: how tracepoints and kprobes attach.
fn attach_perf_event(prog: &OwnedFd, attr: &libbpf_sys::perf_event_attr) -> Result<(), Refusal> {
    let event = hooks::perf_event_open(attr)
        .map_err(|e| Refusal::errno(Stage::Attach, errno(&e), "perf_event_open"))?;
    link(
        prog,
        event.as_raw_fd(),
        libbpf_sys::BPF_PERF_EVENT,
        "BPF_LINK_CREATE on the perf event",
    )
}

fn perf_attr(type_: u32, config: u64) -> libbpf_sys::perf_event_attr {
    let mut attr = libbpf_sys::perf_event_attr {
        type_,
        size: mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr
}

fn tracepoint() -> Outcome {
    let prog = load(&Minimal::new(libbpf_sys::BPF_PROG_TYPE_TRACEPOINT, 0).tracing())?;
    let tracefs = mounts::tracefs().ok_or_else(|| {
        Refusal::new(
            Stage::Attach,
            None,
            format!(
                "tracefs is not mounted at {}, so tracepoint ids cannot be looked up",
                mounts::TRACEFS
            ),
        )
    })?;
    let (group, name) = TRACEPOINT;
    let id_file = tracefs.join("events").join(group).join(name).join("id");
    let id: u64 = fs::read_to_string(&id_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Refusal::new(
                Stage::Setup,
                None,
                format!("cannot read the tracepoint id from {}", id_file.display()),
            )
        })?;
    attach_perf_event(&prog, &perf_attr(libbpf_sys::PERF_TYPE_TRACEPOINT, id))?;
    Ok(format!(
        "loaded and attached to {group}:{name} (id {id}, tracefs at {})",
        tracefs.display()
    ))
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

fn kprobe() -> Outcome {
    let prog = load(&Minimal::new(libbpf_sys::BPF_PROG_TYPE_KPROBE, 0).tracing())?;
    let pmu_type: u32 = fs::read_to_string(Path::new(KPROBE_PMU).join("type"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Refusal::new(
                Stage::Attach,
                Some(libc::ENOENT),
                format!(
                    "the kernel has no kprobe PMU ({KPROBE_PMU} is missing): it was built without CONFIG_KPROBES"
                ),
            )
        })?;
    let function = CString::new(TEST_FUNCTION).expect("no NUL in a constant");
    let mut attr = perf_attr(pmu_type, 0);
    attr.__bindgen_anon_3.kprobe_func = function.as_ptr() as u64;
    attach_perf_event(&prog, &attr)?;
    Ok(format!(
        "loaded and attached to {TEST_FUNCTION} through the kprobe PMU"
    ))
}

/// Attaches to a cgroup made for the purpose, which holds no process, and
/// removes it again. A cgroup2 hierarchy is never mounted for this: a new
/// cgroup2 mount would reset the options of the host's.
fn cgroup_skb() -> Outcome {
    let prog = load(
        &Minimal::new(libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB, CGROUP_SKB_ALLOW)
            .attach_type(libbpf_sys::BPF_CGROUP_INET_INGRESS),
    )?;
    let hierarchy = mounts::mount_points("cgroup2")
        .into_iter()
        .next()
        .ok_or_else(|| {
            Refusal::new(
            Stage::Setup,
            None,
            "no cgroup2 hierarchy is mounted to attach to (mount -t cgroup2 none /sys/fs/cgroup)",
        )
        })?;
    let cgroup = hierarchy.join(format!("meshbpf-probe-{}", std::process::id()));
    fs::create_dir(&cgroup).map_err(|e| {
        Refusal::errno(
            Stage::Setup,
            e.raw_os_error().unwrap_or(0),
            &format!("creating the cgroup {}", cgroup.display()),
        )
    })?;
    let attached = fs::File::open(&cgroup)
        .map_err(|e| Refusal::errno(Stage::Setup, e.raw_os_error().unwrap_or(0), "opening it"))
        .and_then(|dir| {
            link(
                &prog,
                dir.as_raw_fd(),
                libbpf_sys::BPF_CGROUP_INET_INGRESS,
                "BPF_LINK_CREATE on the cgroup",
            )
        });
    let _ = fs::remove_dir(&cgroup);
    attached?;
    Ok(format!(
        "loaded and attached to inet ingress of an empty cgroup under {}",
        hierarchy.display()
    ))
}

fn create_map(
    map_type: libbpf_sys::bpf_map_type,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<(), Refusal> {
    let mut opts: libbpf_sys::bpf_map_create_opts = ffi::opts();
    opts.map_flags = flags;
    // SAFETY: a NUL-terminated name and options that outlive the call, which
    // returns a fresh fd (closed at once) or -errno.
    let created = unsafe {
        ffi::fd(libbpf_sys::bpf_map_create(
            map_type,
            c"meshbpf_probe".as_ptr(),
            key_size,
            value_size,
            max_entries,
            &opts,
        ))
    };
    created.map(drop).map_err(|e| {
        let mut refusal = Refusal::errno(Stage::Load, errno(&e), "BPF_MAP_CREATE");
        if errno(&e) == libc::EPERM {
            refusal.reason.push_str(&eperm_cause(&[caps::BPF], false));
        }
        refusal
    })
}

fn ringbuf() -> Outcome {
    // One page: the smallest ring the kernel accepts.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u32;
    create_map(libbpf_sys::BPF_MAP_TYPE_RINGBUF, 0, 0, page, 0)?;
    Ok(format!("created a ring buffer of {page} bytes"))
}

fn lpm_trie() -> Outcome {
    // Key: a 32-bit prefix length, then an IPv4 address.
    create_map(
        libbpf_sys::BPF_MAP_TYPE_LPM_TRIE,
        8,
        4,
        1,
        libbpf_sys::BPF_F_NO_PREALLOC,
    )?;
    Ok("created an LPM trie with IPv4 keys".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_are_unique_snake_case() {
        let names: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    #[test]
    fn errnos_are_named_and_explained() {
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(
            Refusal::errno(Stage::Load, libc::EINVAL, "BPF_MAP_CREATE").reason,
            "BPF_MAP_CREATE failed with EINVAL (Invalid argument)"
        );
    }

    #[test]
    fn the_verifiers_last_word_is_kept() {
        let spec = Minimal::new(libbpf_sys::BPF_PROG_TYPE_XDP, 2);
        let refusal = load_refusal(&spec, libc::EACCES, b"0: (b7) r0 = 2\nR0 !read_ok\n\0\0");
        assert_eq!(refusal.stage, Stage::Load);
        assert_eq!(
            refusal.reason,
            "BPF_PROG_LOAD failed with EACCES (Permission denied); the verifier said: R0 !read_ok"
        );
    }
}
