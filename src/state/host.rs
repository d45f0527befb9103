//! Host-wide attachments, one of each program per root under
//! `host/<program>/`: syscall_latency, and lsm_monitor with its policy.
//! Each change runs under the root's exclusive lock.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::bpffs;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::programs::lsm_monitor::policy_maps::{self, PinnedPolicyMaps};
use crate::programs::lsm_monitor::{self, setup, LsmAttachment, Mode};
use crate::programs::syscall_latency::{self, LatencyAttachment, Method, Prepared};
use crate::rules::policy::{CompiledPolicy, Policy};

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
    // Left by an attach that was killed before its link pin.
    if dir.exists() {
        dir.unpin()?;
    }
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
    // Left by an attach that was killed before its commit pin.
    if dir.exists() {
        dir.unpin()?;
    }
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
