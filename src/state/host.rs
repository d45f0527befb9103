//! Host-wide attachments, one of each program per root under
//! `host/<program>/`: syscall_latency, and lsm_monitor with its policy.
//!
//! Invariant: a program of meshbpf runs host-wide only while a pin holds its
//! link, and every such pin is in `host/<program>/` (attached, or an
//! interrupted attach) or `host/<program>:detaching/` (an interrupted
//! detach). Each change runs under the root's exclusive lock.
//!
//! `attach --latency` / `attach --lsm`, one commit point: the `link` pin.
//! 1. Leftovers are cleared first: a `:detaching` directory is removed (the
//!    detach is finished), an uncommitted `host/<program>/` is removed (the
//!    attach is undone), links detached before their pins go.
//! 2. The programs load and hook, their links held only by fds. Killed
//!    here, the process's death releases them: nothing is left.
//! 3. `host/<program>/` is made, maps and programs pinned. Killed: pins,
//!    nothing runs.
//! 4. Each link is pinned, in hooking order. Killed: k of n links pinned,
//!    those programs running.
//! 5. The last link is pinned as `link`: committed.
//!
//! After a kill in 3-4, `health` names an interrupted attach ("k of n links
//! pinned, programs ... running"); `health --fix` and `detach` remove it
//! (the old state), `attach` removes it and attaches (the new one).
//!
//! `detach --latency` / `detach --lsm`, one commit point: a rename.
//! 1. A `:detaching` directory from before is removed.
//! 2. `host/<program>/` is renamed to `host/<program>:detaching/`: from
//!    here on the program is detached for every reader.
//! 3. Its links are detached (raw tracepoints have no detach: their fds are
//!    held), then every pin goes, `link` first, and the directory.
//!
//! After a kill in 3, `health` names an interrupted detach (with the
//! programs still running); `detach`, `attach` and `health --fix` finish it.
//! Run again at any point, detach carries on where it stopped.
//!
//! `lsm apply` and `attach --lsm --policy` on an attached monitor write the
//! idle policy generation and flip to it in one map update: killed before
//! the flip, the old policy stays in force.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::bpffs;
use crate::kernel::bpfobj;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::programs::lsm_monitor::policy_maps::{self, PinnedPolicyMaps};
use crate::programs::lsm_monitor::{self, setup, LsmAttachment, Mode};
use crate::programs::syscall_latency::{self, LatencyAttachment, Method, Prepared};
use crate::rules::policy::{CompiledPolicy, Policy};

/// The host-wide programs and the flag of `attach`/`detach` that names each.
pub const PROGRAMS: [(&str, &str); 2] = [
    (syscall_latency::PROGRAM, "--latency"),
    (lsm_monitor::PROGRAM, "--lsm"),
];

/// Marks the directory of a detach in progress.
const DETACHING_SUFFIX: &str = ":detaching";

fn detaching(dir: &AttachmentDir) -> AttachmentDir {
    let mut name = dir.path.file_name().unwrap_or_default().to_os_string();
    name.push(DETACHING_SUFFIX);
    AttachmentDir {
        interface: String::new(),
        program: dir.program.clone(),
        path: dir.path.with_file_name(name),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interrupted {
    Attach,
    Detach,
}

/// What a killed attach or detach left of a host-wide program.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub program: &'static str,
    pub flag: &'static str,
    pub interrupted: Interrupted,
    pub dir: AttachmentDir,
    /// The programs pinned: each gets one link once attached.
    pub programs: usize,
    /// The name of the program each pinned link runs, one per link.
    pub running: Vec<String>,
}

impl Leftover {
    /// "interrupted attach of syscall_latency at DIR: 1 of 2 links pinned,
    /// program lat_enter_btf running".
    pub fn describe(&self) -> String {
        let what = match self.interrupted {
            Interrupted::Attach => "attach",
            Interrupted::Detach => "detach",
        };
        let links = match (self.interrupted, self.running.len()) {
            (Interrupted::Attach, 0) => "no link pinned".to_string(),
            (Interrupted::Attach, n) => format!("{n} of {} links pinned", self.programs.max(n)),
            (Interrupted::Detach, 0) => "no link left".to_string(),
            (Interrupted::Detach, 1) => "1 link still pinned".to_string(),
            (Interrupted::Detach, n) => format!("{n} links still pinned"),
        };
        let runs = match self.running.as_slice() {
            [] => "nothing runs".to_string(),
            [one] => format!("program {one} running host-wide"),
            many => format!("programs {} running host-wide", many.join(", ")),
        };
        format!(
            "interrupted {what} of {} at {}: {links}, {runs}",
            self.program,
            self.dir.path.display()
        )
    }

    pub fn hint(&self) -> String {
        let flag = self.flag;
        match self.interrupted {
            Interrupted::Attach => format!(
                "run meshbpf detach {flag} or meshbpf health --fix to remove it; meshbpf attach {flag} starts over"
            ),
            Interrupted::Detach => {
                format!("run meshbpf detach {flag} or meshbpf health --fix to finish the detach")
            }
        }
    }

    /// Finishes the detach or undoes the attach: the links go first.
    pub fn clear(&self) -> Result<()> {
        self.dir.remove()
    }
}

/// The pins of `dir` that hold links, deduplicated by link: `link` pins
/// the last link a second time in lsm_monitor.
fn running(dir: &AttachmentDir) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    let mut names = Vec::new();
    for name in pin_names(dir)? {
        if name != "link" && !name.starts_with("link_") {
            continue;
        }
        let pin = dir.pin(&name);
        let link = bpfobj::open_pinned(&pin)?;
        let info = bpfobj::link_info(link.as_fd())
            .with_context(|| format!("inspecting {}", pin.display()))?;
        if !seen.contains(&info.id) {
            seen.push(info.id);
            names.push(bpfobj::prog_info_by_id(info.prog_id)?.name);
        }
    }
    Ok(names)
}

fn pin_names(dir: &AttachmentDir) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(&dir.path)
        .with_context(|| format!("listing {}", dir.path.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.path.display()))?;
    names.sort();
    Ok(names)
}

fn leftover(
    program: &'static str,
    flag: &'static str,
    interrupted: Interrupted,
    dir: AttachmentDir,
) -> Result<Leftover> {
    let programs = pin_names(&dir)?
        .iter()
        .filter(|n| *n == "prog" || n.starts_with("prog_"))
        .count();
    Ok(Leftover {
        program,
        flag,
        interrupted,
        running: running(&dir)?,
        programs,
        dir,
    })
}

/// What interrupted attaches and detaches left of `program`, read without a
/// lock (the caller holds one).
fn leftovers_of(
    root: &StateRoot,
    program: &'static str,
    flag: &'static str,
) -> Result<Vec<Leftover>> {
    let dir = root.host_attachment(program);
    let mut found = Vec::new();
    let gone = detaching(&dir);
    if gone.exists() {
        found.push(leftover(program, flag, Interrupted::Detach, gone)?);
    }
    if dir.exists() && !dir.is_committed() {
        found.push(leftover(program, flag, Interrupted::Attach, dir)?);
    }
    Ok(found)
}

/// Every leftover of every host-wide program, under the shared lock.
pub fn leftovers(root: &StateRoot) -> Result<Vec<Leftover>> {
    let _lock = root.lock_shared()?;
    let mut found = Vec::new();
    for (program, flag) in PROGRAMS {
        found.extend(leftovers_of(root, program, flag)?);
    }
    Ok(found)
}

/// Finishes every interrupted detach and undoes every interrupted attach,
/// under the exclusive lock; returns what it cleared, each with its result.
pub fn clear_leftovers(root: &StateRoot) -> Result<Vec<(Leftover, Result<()>)>> {
    let _lock = root.lock()?;
    let mut cleared = Vec::new();
    for (program, flag) in PROGRAMS {
        for leftover in leftovers_of(root, program, flag)? {
            let result = leftover.clear();
            cleared.push((leftover, result));
        }
    }
    Ok(cleared)
}

/// Clears what a killed command left of `program`, under the caller's lock.
fn clear_program(root: &StateRoot, program: &str) -> Result<()> {
    for (name, flag) in PROGRAMS.iter().filter(|(name, _)| *name == program) {
        for leftover in leftovers_of(root, name, flag)? {
            log::info!("clearing an {}", leftover.describe());
            leftover.clear()?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum LatencyOutcome {
    Attached,
    AlreadyAttached,
}

/// syscall_latency as `attach --latency` asks for it.
pub struct LatencyRequest<'a> {
    /// The methods to try, in order.
    pub methods: &'a [Method],
    pub prepared: &'a Prepared,
    /// Whether filters or a method were asked for: they are fixed at load,
    /// so an attachment already there cannot take them.
    pub explicit: bool,
    pub btf: Option<&'a Path>,
}

/// Loads, hooks and pins syscall_latency, or reports the one attached.
pub fn attach_latency(
    root: &StateRoot,
    request: &LatencyRequest,
) -> Result<(LatencyOutcome, LatencyAttachment)> {
    let _lock = root.lock()?;
    let dir = root.host_attachment(syscall_latency::PROGRAM);
    if dir.is_committed() {
        let existing = syscall_latency::inspect(&dir)?;
        if request.explicit {
            return Err(Failure::new(format!(
                "syscall_latency is already attached ({}{}); its filters are fixed at load",
                existing.method.as_str(),
                syscall_latency::describe_filters(&existing)
            ))
            .hint(
                "to change them: meshbpf detach --latency, then attach --latency with the new ones",
            )
            .into());
        }
        return Ok((LatencyOutcome::AlreadyAttached, existing));
    }
    clear_program(root, syscall_latency::PROGRAM)?;
    syscall_latency::attach(&dir, request.methods, request.prepared, request.btf)?;
    Ok((LatencyOutcome::Attached, syscall_latency::inspect(&dir)?))
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum LsmOutcome {
    Attached,
    AlreadyAttached,
    /// The monitor stayed; its policy (and maybe mode) was replaced.
    PolicyReplaced,
}

pub struct LsmAttached {
    pub status: LsmOutcome,
    pub attachment: LsmAttachment,
    /// Why BPF LSM is not used; only when this attach chose the fallback.
    pub fallback_reason: Option<String>,
    /// Set when this attach mounted tracefs for the fallback.
    pub mounted_tracefs: Option<PathBuf>,
}

/// No policy file: nothing watched, denied or allow-listed; exec, ptrace,
/// capability and module events are still reported.
fn no_policy() -> CompiledPolicy {
    CompiledPolicy {
        flags: 0,
        paths: Vec::new(),
        uids: Vec::new(),
        comms: Vec::new(),
        cgroups: Vec::new(),
    }
}

/// Attaches lsm_monitor with `policy` (none: [`no_policy`]), or on the one
/// attached replaces the policy when one is given.
pub fn attach_lsm(
    root: &StateRoot,
    policy: Option<CompiledPolicy>,
    mode: Mode,
    btf: Option<&Path>,
) -> Result<LsmAttached> {
    let _lock = root.lock()?;
    let dir = root.host_attachment(lsm_monitor::PROGRAM);
    if dir.is_committed() {
        let existing = lsm_monitor::inspect(&dir)?;
        let status = match &policy {
            None => LsmOutcome::AlreadyAttached,
            Some(policy) => {
                replace_policy(&dir, existing.method, policy, mode, btf)?;
                LsmOutcome::PolicyReplaced
            }
        };
        return Ok(LsmAttached {
            status,
            attachment: lsm_monitor::inspect(&dir)?,
            fallback_reason: None,
            mounted_tracefs: None,
        });
    }
    clear_program(root, lsm_monitor::PROGRAM)?;
    let attached = lsm_monitor::attach(&dir, &policy.unwrap_or_else(no_policy), mode, btf)?;
    Ok(LsmAttached {
        status: LsmOutcome::Attached,
        attachment: lsm_monitor::inspect(&dir)?,
        fallback_reason: attached.fallback_reason,
        mounted_tracefs: attached.mounted_tracefs,
    })
}

/// Writes `policy` into the attached monitor's idle generation and flips
/// to it; enforce mode needs the BPF LSM set. Returns the generation.
fn replace_policy(
    dir: &AttachmentDir,
    method: lsm_monitor::Method,
    policy: &CompiledPolicy,
    mode: Mode,
    btf: Option<&Path>,
) -> Result<u8> {
    if mode == Mode::Enforce && method == lsm_monitor::Method::Tracepoint {
        let why = setup::lsm_refusal(btf)
            .unwrap_or_else(|| "it was attached when BPF LSM could not run".to_string());
        return Err(Failure::new(format!(
            "--enforce: the attached lsm_monitor runs the tracepoint fallback, which cannot deny ({why})"
        ))
        .hint("leave out --enforce to audit with this policy; once BPF LSM runs here, meshbpf detach --lsm and attach --lsm --enforce")
        .into());
    }
    let maps = PinnedPolicyMaps::open(dir)?;
    policy_maps::apply(&maps.maps(), policy, mode)
}

pub struct PolicyApplied {
    pub generation: u8,
    /// The monitor as it is now.
    pub attachment: LsmAttachment,
}

/// Replaces the policy of the attached lsm_monitor; `mode` `None` keeps the
/// one it runs in. The lock-out check is for the mode it ends up in.
pub fn apply_lsm_policy(
    root: &StateRoot,
    policy: &Policy,
    mode: Option<Mode>,
) -> Result<PolicyApplied> {
    if !bpffs::is_on_bpffs(root.path()) {
        return Err(lsm_not_attached(root).into());
    }
    let _lock = root.lock()?;
    let dir = root.host_attachment(lsm_monitor::PROGRAM);
    if !dir.is_committed() {
        return Err(lsm_not_attached(root).into());
    }
    let existing = lsm_monitor::inspect(&dir)?;
    let mode = mode.unwrap_or(existing.mode);
    policy.check_lockout(mode == Mode::Enforce, root.path())?;
    let compiled = policy.compile()?;
    let generation = replace_policy(&dir, existing.method, &compiled, mode, None)?;
    Ok(PolicyApplied {
        generation,
        attachment: lsm_monitor::inspect(&dir)?,
    })
}

fn lsm_not_attached(root: &StateRoot) -> Failure {
    Failure::new(format!(
        "lsm_monitor is not attached: no lsm_monitor attachment under {}",
        root.path().display()
    ))
    .hint("meshbpf attach --lsm --policy POLICY.json attaches it with a policy")
}

/// A host-wide attachment as `detach --latency` and `detach --lsm` found
/// and removed it.
pub struct RemovedHost<T> {
    /// Whether there was anything (an attachment or leftover pins).
    pub existed: bool,
    /// The attachment as it was, when it was committed and readable.
    pub before: Option<T>,
}

/// Detaches a host-wide program under the root's lock, reading it first
/// with `inspect`; a root that is not on a bpffs holds none. The rename to
/// `:detaching` commits; a detach killed after it is finished here.
pub fn detach<T>(
    root: &StateRoot,
    program: &str,
    inspect: impl FnOnce(&AttachmentDir) -> Result<T>,
) -> Result<RemovedHost<T>> {
    if !bpffs::is_on_bpffs(root.path()) {
        return Ok(RemovedHost {
            existed: false,
            before: None,
        });
    }
    let _lock = root.lock()?;
    let dir = root.host_attachment(program);
    let gone = detaching(&dir);
    let mut existed = gone.exists();
    if existed {
        gone.remove()?;
    }
    let before = if dir.is_committed() {
        inspect(&dir).ok()
    } else {
        None
    };
    if dir.exists() {
        existed = true;
        rename(&dir.path, &gone.path)?;
        gone.remove()?;
    }
    Ok(RemovedHost { existed, before })
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftover(interrupted: Interrupted, running: &[&str]) -> Leftover {
        let root = StateRoot::new(PathBuf::from("/sys/fs/bpf/meshbpf"));
        let dir = root.host_attachment(syscall_latency::PROGRAM);
        Leftover {
            program: syscall_latency::PROGRAM,
            flag: "--latency",
            interrupted,
            dir: match interrupted {
                Interrupted::Attach => dir,
                Interrupted::Detach => detaching(&dir),
            },
            programs: 2,
            running: running.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn leftovers_say_what_was_interrupted_and_what_still_runs() {
        assert_eq!(
            leftover(Interrupted::Attach, &["lat_enter_btf"]).describe(),
            "interrupted attach of syscall_latency at /sys/fs/bpf/meshbpf/host/syscall_latency: 1 of 2 links pinned, program lat_enter_btf running host-wide"
        );
        assert_eq!(
            leftover(Interrupted::Attach, &[]).describe(),
            "interrupted attach of syscall_latency at /sys/fs/bpf/meshbpf/host/syscall_latency: no link pinned, nothing runs"
        );
        let detach = leftover(Interrupted::Detach, &["a", "b"]);
        assert_eq!(
            detach.describe(),
            "interrupted detach of syscall_latency at /sys/fs/bpf/meshbpf/host/syscall_latency:detaching: 2 links still pinned, programs a, b running host-wide"
        );
        assert!(
            detach.hint().contains("meshbpf detach --latency"),
            "{}",
            detach.hint()
        );
    }
}
