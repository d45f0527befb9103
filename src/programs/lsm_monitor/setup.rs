//! Choosing, loading, hooking and pinning one of lsm_monitor's program
//! sets.
//!
//! BPF LSM is tried where bpf is an active LSM; when it is not, or the
//! kernel refuses to load or hook an LSM program, the tracepoint fallback
//! runs and the refusal is kept as the reason. The policy is written before
//! the first hook, so the first event already sees it; the links are
//! pinned last, the final one also as the commit pin. On failure nothing
//! stays pinned or hooked: unpinned links go with their fds.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Result;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, ProgramMut};

use super::skel::types::lsm_syscalls;
use super::skel::{self, LsmMonitorSkel};
use super::{link_pin, policy_maps, prog_pin, Method, Mode};
use super::{CONFIG_MAP, COUNTERS_MAP, EVENTS_MAP, PROGRAM};
use crate::error::{errno_of, Failure};
use crate::kernel::btf::OpenOpts;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::verifier::{self, FailedProgram};
use crate::kernel::{bpfobj, hooks, probe, syscalls, sysinfo, tracefs};
use crate::rules::policy::CompiledPolicy;

/// What `attach` set up.
#[derive(Debug)]
pub struct Attached {
    pub method: Method,
    /// Why BPF LSM is not used, when the fallback runs.
    pub fallback_reason: Option<String>,
    /// Set when this attach mounted tracefs for the fallback.
    pub mounted_tracefs: Option<PathBuf>,
}

/// The syscall numbers the fallback watches, for the architecture meshbpf
/// was built for; -1 for a syscall it does not have (aarch64 has no open).
fn syscall_numbers() -> lsm_syscalls {
    let nr = |name: &str| syscalls::resolve(name).map_or(-1, |nr| nr as i32);
    lsm_syscalls {
        open: nr("open"),
        openat: nr("openat"),
        openat2: nr("openat2"),
        creat: nr("creat"),
        ptrace: nr("ptrace"),
        init_module: nr("init_module"),
        finit_module: nr("finit_module"),
        pad: 0,
    }
}

/// Opens and loads `method`'s set, unhooked, with the syscall numbers in
/// .rodata.
fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    method: Method,
    btf: Option<&Path>,
) -> Result<LsmMonitorSkel<'obj>> {
    let opts = OpenOpts::new(btf)?;
    verifier::load(&format!("{PROGRAM} ({} set)", method.as_str()), || {
        let mut open = skel::LsmMonitorSkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        let progs = &mut open.progs;
        for (prog, of) in [
            (&mut progs.lsm_open, Method::Lsm),
            (&mut progs.lsm_exec, Method::Lsm),
            (&mut progs.lsm_ptrace, Method::Lsm),
            (&mut progs.lsm_capable, Method::Lsm),
            (&mut progs.lsm_read_file, Method::Lsm),
            (&mut progs.lsm_load_data, Method::Lsm),
            (&mut progs.lsm_mod_request, Method::Lsm),
            (&mut progs.tp_exec, Method::Tracepoint),
            (&mut progs.tp_sys_enter, Method::Tracepoint),
            (&mut progs.tp_sys_exit, Method::Tracepoint),
        ] {
            prog.set_autoload(of == method);
        }
        let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
            libbpf_rs::Error::from(std::io::Error::other(".rodata is not memory-mapped"))
        })?;
        rodata.lsm_syscalls = syscall_numbers();
        open.load()
    })
}

/// The loaded programs of `method`'s set, by name, in hooking order.
fn programs<'a, 'obj>(
    skel: &'a LsmMonitorSkel<'obj>,
    method: Method,
) -> Vec<(&'static str, &'a ProgramMut<'obj>)> {
    let p = &skel.progs;
    let all = [
        ("lsm_open", &p.lsm_open),
        ("lsm_exec", &p.lsm_exec),
        ("lsm_ptrace", &p.lsm_ptrace),
        ("lsm_capable", &p.lsm_capable),
        ("lsm_read_file", &p.lsm_read_file),
        ("lsm_load_data", &p.lsm_load_data),
        ("lsm_mod_request", &p.lsm_mod_request),
        ("tp_exec", &p.tp_exec),
        ("tp_sys_enter", &p.tp_sys_enter),
        ("tp_sys_exit", &p.tp_sys_exit),
    ];
    method
        .programs()
        .iter()
        .filter_map(|name| all.iter().find(|(n, _)| n == name).copied())
        .collect()
}

/// Hooks one program; `tracefs` is where tp_exec's tracepoint has its id.
fn hook(name: &str, prog: &ProgramMut<'_>, tracefs: Option<&Path>) -> Result<OwnedFd> {
    match (name, tracefs) {
        ("tp_exec", Some(tracefs)) => {
            hooks::attach_tracepoint(prog.as_fd(), tracefs, "sched", "sched_process_exec")
        }
        ("tp_sys_enter", _) => hooks::attach_raw(prog.as_fd(), Some("sys_enter")),
        ("tp_sys_exit", _) => hooks::attach_raw(prog.as_fd(), Some("sys_exit")),
        // An LSM program attaches to the hook it was loaded for.
        _ => hooks::attach_raw(prog.as_fd(), None),
    }
}

/// A loaded set with its policy written and every program hooked.
struct Running<'obj> {
    skel: LsmMonitorSkel<'obj>,
    method: Method,
    links: Vec<(&'static str, OwnedFd)>,
}

/// Why a set did not start: the kernel refused to load or to hook it (BPF
/// LSM then falls back), or something else failed.
enum Failed {
    Load(anyhow::Error),
    Hook(anyhow::Error),
    Error(anyhow::Error),
}

impl From<Failed> for anyhow::Error {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Load(err) | Failed::Hook(err) | Failed::Error(err) => err,
        }
    }
}

fn start<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    method: Method,
    policy: &CompiledPolicy,
    mode: Mode,
    tracefs: Option<&Path>,
    btf: Option<&Path>,
) -> Result<Running<'obj>, Failed> {
    let skel = load(object, method, btf).map_err(Failed::Load)?;
    policy_maps::apply(&policy_maps::PolicyMaps::of_skeleton(&skel), policy, mode)
        .map_err(Failed::Error)?;
    let mut links = Vec::new();
    for (name, prog) in programs(&skel, method) {
        let link = hook(name, prog, tracefs)
            .map_err(|err| Failed::Hook(err.context(FailedProgram(name.to_string()))))?;
        links.push((name, link));
    }
    Ok(Running {
        skel,
        method,
        links,
    })
}

/// The kernel's refusal of the BPF LSM set in one line: the program, the
/// stage and the errno, as `attach` reports it.
fn refusal_reason(err: &anyhow::Error, hooking: bool) -> String {
    let stage = if hooking { "attach" } else { "load" };
    let program = err.downcast_ref::<FailedProgram>().map_or_else(
        || "the BPF LSM programs".to_string(),
        |p| format!("BPF LSM program '{}'", p.0),
    );
    match errno_of(err) {
        Some(errno) => format!(
            "the kernel refused to {stage} {program}: {}",
            probe::errno_text(errno)
        ),
        None => format!("{stage} {program}: {err:#}"),
    }
}

/// Why BPF LSM cannot run here without trying it: bpf is not an active
/// LSM. Unknown (no securityfs) counts as worth a try.
fn bpf_lsm_inactive() -> Option<String> {
    let lsms = sysinfo::lsms().ok()?;
    (!lsms.iter().any(|l| l == "bpf")).then(|| {
        format!(
            "bpf is not among the active LSMs ({}): the kernel runs no BPF LSM programs",
            lsms.join(",")
        )
    })
}

/// Why BPF LSM cannot run here, found by loading its set unhooked; None
/// when the kernel takes it.
pub fn lsm_refusal(btf: Option<&Path>) -> Option<String> {
    if let Some(reason) = bpf_lsm_inactive() {
        return Some(reason);
    }
    let mut object = MaybeUninit::uninit();
    let loaded = load(&mut object, Method::Lsm, btf);
    loaded.err().map(|err| refusal_reason(&err, false))
}

/// Loads, hooks and pins lsm_monitor into `dir` with `policy` in force:
/// BPF LSM when the kernel runs it, else the tracepoint fallback, which
/// `Mode::Enforce` refuses. On failure nothing stays pinned or hooked.
pub fn attach(
    dir: &AttachmentDir,
    policy: &CompiledPolicy,
    mode: Mode,
    btf: Option<&Path>,
) -> Result<Attached> {
    let mut lsm_object = MaybeUninit::uninit();
    let reason = match bpf_lsm_inactive() {
        Some(reason) => reason,
        None => match start(&mut lsm_object, Method::Lsm, policy, mode, None, btf) {
            Ok(running) => {
                commit(&running, dir)?;
                return Ok(Attached {
                    method: Method::Lsm,
                    fallback_reason: None,
                    mounted_tracefs: None,
                });
            }
            Err(Failed::Load(err)) => refusal_reason(&err, false),
            Err(Failed::Hook(err)) => refusal_reason(&err, true),
            Err(Failed::Error(err)) => return Err(err),
        },
    };
    if mode == Mode::Enforce {
        return Err(Failure::new(format!(
            "--enforce needs BPF LSM programs, and {reason}"
        ))
        .hint("attach without --enforce: the tracepoint fallback audits (reports what the policy would deny) but cannot deny")
        .into());
    }
    let (tracefs, mounted) = tracefs::ensure_mounted()?;
    let mut object = MaybeUninit::uninit();
    let running = start(
        &mut object,
        Method::Tracepoint,
        policy,
        mode,
        Some(&tracefs),
        btf,
    )?;
    commit(&running, dir)?;
    Ok(Attached {
        method: Method::Tracepoint,
        fallback_reason: Some(reason),
        mounted_tracefs: mounted.then_some(tracefs),
    })
}

/// Pins maps, programs and links, the last link also as the commit pin;
/// on failure removes what it pinned (the links then go with `running`).
fn commit(running: &Running<'_>, dir: &AttachmentDir) -> Result<()> {
    let pinned = pin(running, dir);
    if pinned.is_err() && dir.exists() {
        dir.unpin()?;
    }
    pinned
}

fn pin(running: &Running<'_>, dir: &AttachmentDir) -> Result<()> {
    let skel = &running.skel;
    dir.create()?;
    let m = &skel.maps;
    let maps: [(&str, &dyn AsFd); 3] = [
        (EVENTS_MAP, &m.events),
        (COUNTERS_MAP, &m.counters),
        (CONFIG_MAP, &m.rodata),
    ];
    for (name, map) in maps {
        bpfobj::pin(map.as_fd(), &dir.map(name))?;
    }
    policy_maps::PolicyMaps::pin(skel, dir)?;
    for (name, prog) in programs(skel, running.method) {
        bpfobj::pin(prog.as_fd(), &prog_pin(dir, name))?;
    }
    for (name, link) in &running.links {
        bpfobj::pin(link.as_fd(), &link_pin(dir, name))?;
    }
    let (_, last) = running.links.last().expect("every set has programs");
    bpfobj::pin(last.as_fd(), &dir.link())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_watches_this_archs_syscalls() {
        #[cfg(target_arch = "x86_64")]
        const EXPECTED: [i32; 7] = [2, 257, 437, 85, 101, 175, 313];
        #[cfg(target_arch = "aarch64")]
        const EXPECTED: [i32; 7] = [-1, 56, 437, -1, 117, 105, 273];
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        const EXPECTED: [i32; 7] = [-1; 7];
        let n = syscall_numbers();
        let found = [
            n.open,
            n.openat,
            n.openat2,
            n.creat,
            n.ptrace,
            n.init_module,
            n.finit_module,
        ];
        assert_eq!(found, EXPECTED);
        assert_eq!(n.pad, 0);
    }

    #[test]
    fn every_program_of_a_set_is_named_in_it() {
        assert_eq!(Method::Lsm.programs().len(), 7);
        assert_eq!(
            Method::Tracepoint.programs(),
            ["tp_exec", "tp_sys_enter", "tp_sys_exit"]
        );
    }

    #[test]
    fn refusals_name_the_program_the_stage_and_the_errno() {
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EPERM))
            .context(FailedProgram("lsm_open".into()));
        assert_eq!(
            refusal_reason(&err, false),
            "the kernel refused to load BPF LSM program 'lsm_open': EPERM (Operation not permitted)"
        );
        let bare = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(refusal_reason(&bare, true)
            .starts_with("the kernel refused to attach the BPF LSM programs: "));
    }
}
