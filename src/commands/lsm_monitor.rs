//! lsm_monitor host-wide: `attach --lsm [--policy F] [--enforce]`,
//! `detach --lsm`, and `lsm apply`, which replaces the policy atomically.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{LsmApplyArgs, LsmTargetArgs};
use crate::error::Failure;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{bpffs, caps};
use crate::output::{Output, Report};
use crate::programs::lsm_monitor::policy_maps::{self, PinnedPolicyMaps};
use crate::programs::lsm_monitor::{
    self, setup, LsmAttachment, Method, Mode, PolicySummary, PROGRAM,
};
use crate::rules::policy::{self, CompiledPolicy};
use crate::state;

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Attached,
    AlreadyAttached,
    /// The monitor stayed; its policy (and maybe mode) was replaced.
    PolicyReplaced,
}

#[derive(Debug, Serialize)]
struct AttachReport {
    status: Outcome,
    #[serde(flatten)]
    attachment: LsmAttachment,
    /// Why BPF LSM is not used; only when this attach chose the fallback.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_reason: Option<String>,
}

fn ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Report for AttachReport {
    fn render(&self) -> String {
        let a = &self.attachment;
        let head = match self.status {
            Outcome::Attached => format!(
                "attached {} host-wide with {} in {} mode (prog ids {}, link ids {}); pinned at {}",
                a.program,
                lsm_monitor::describe_method(a.method),
                a.mode.as_str(),
                ids(&a.prog_ids),
                ids(&a.link_ids),
                a.pin_path
            ),
            Outcome::AlreadyAttached => format!(
                "{} is already attached with {} in {} mode since {}; nothing changed",
                a.program,
                lsm_monitor::describe_method(a.method),
                a.mode.as_str(),
                a.attached_at
            ),
            Outcome::PolicyReplaced => format!(
                "replaced the policy of {} atomically; {} mode",
                a.program,
                a.mode.as_str()
            ),
        };
        let fallback = self
            .fallback_reason
            .as_ref()
            .map(|r| format!("\nno BPF LSM: {r}"))
            .unwrap_or_default();
        format!(
            "{head}{fallback}\n{}\nread events with `meshbpf events`",
            lsm_monitor::describe_policy(&a.policy)
        )
    }
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

/// Reads, checks and compiles a policy file, before anything changes.
fn compile(path: &Path, mode: Mode) -> Result<CompiledPolicy> {
    let policy = policy::load(path).map_err(Failure::from)?;
    policy.check_lockout(mode == Mode::Enforce)?;
    policy.compile()
}

/// `attach --lsm`: attach lsm_monitor, or replace the policy of the one
/// attached.
pub fn attach(root: &StateRoot, out: &Output, args: &LsmTargetArgs) -> Result<()> {
    let btf = args.btf.as_deref();
    let mode = Mode::of(args.enforce);
    let compiled = args
        .policy
        .as_deref()
        .map(|p| compile(p, mode))
        .transpose()?;
    caps::require("attach --lsm", &[caps::BPF, caps::PERFMON, caps::SYS_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    let _lock = root.lock()?;
    let dir = root.host_attachment(PROGRAM);
    if dir.is_committed() {
        let existing = lsm_monitor::inspect(&dir)?;
        let status = match &compiled {
            None => Outcome::AlreadyAttached,
            Some(compiled) => {
                replace(&dir, existing.method, compiled, mode, btf)?;
                Outcome::PolicyReplaced
            }
        };
        return out
            .emit(&AttachReport {
                status,
                attachment: lsm_monitor::inspect(&dir)?,
                fallback_reason: None,
            })
            .map_err(Into::into);
    }
    // Left by an attach that was killed before its commit pin.
    if dir.exists() {
        dir.unpin()?;
    }
    let attached = lsm_monitor::attach(&dir, &compiled.unwrap_or_else(no_policy), mode, btf)?;
    if let Some(tracefs) = &attached.mounted_tracefs {
        out.note(&format!("mounted tracefs at {}", tracefs.display()));
    }
    out.emit(&AttachReport {
        status: Outcome::Attached,
        attachment: lsm_monitor::inspect(&dir)?,
        fallback_reason: attached.fallback_reason,
    })?;
    Ok(())
}

/// Writes `compiled` into the attached monitor's idle generation and flips
/// to it; enforce mode needs the BPF LSM set. Returns the generation.
fn replace(
    dir: &AttachmentDir,
    method: Method,
    compiled: &CompiledPolicy,
    mode: Mode,
    btf: Option<&Path>,
) -> Result<u8> {
    if mode == Mode::Enforce && method == Method::Tracepoint {
        let why = setup::lsm_refusal(btf)
            .unwrap_or_else(|| "it was attached when BPF LSM could not run".to_string());
        return Err(Failure::new(format!(
            "--enforce: the attached lsm_monitor runs the tracepoint fallback, which cannot deny ({why})"
        ))
        .hint("leave out --enforce to audit with this policy; once BPF LSM runs here, meshbpf detach --lsm and attach --lsm --enforce")
        .into());
    }
    let maps = PinnedPolicyMaps::open(dir)?;
    policy_maps::apply(&maps.maps(), compiled, mode)
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    program: &'static str,
    status: Outcome,
    mode: Mode,
    generation: u8,
    policy: PolicySummary,
}

impl Report for ApplyReport {
    fn render(&self) -> String {
        format!(
            "replaced the policy of {} atomically; {} mode\n{}",
            self.program,
            self.mode.as_str(),
            lsm_monitor::describe_policy(&self.policy)
        )
    }
}

fn not_attached(root: &StateRoot) -> Failure {
    Failure::new(format!(
        "lsm_monitor is not attached: no lsm_monitor attachment under {}",
        root.path().display()
    ))
    .hint("meshbpf attach --lsm --policy POLICY.json attaches it with a policy")
}

/// `lsm apply POLICY [--enforce | --audit]`.
pub fn apply(root: &StateRoot, out: &Output, args: &LsmApplyArgs) -> Result<()> {
    let policy = policy::load(&args.policy).map_err(Failure::from)?;
    caps::require("lsm apply", &[caps::BPF])?;
    if !bpffs::is_on_bpffs(root.path()) {
        return Err(not_attached(root).into());
    }
    let _lock = root.lock()?;
    let dir = root.host_attachment(PROGRAM);
    if !dir.is_committed() {
        return Err(not_attached(root).into());
    }
    let existing = lsm_monitor::inspect(&dir)?;
    let mode = match (args.enforce, args.audit) {
        (true, _) => Mode::Enforce,
        (_, true) => Mode::Audit,
        _ => existing.mode,
    };
    policy.check_lockout(mode == Mode::Enforce)?;
    let compiled = policy.compile()?;
    let generation = replace(&dir, existing.method, &compiled, mode, None)?;
    let now = lsm_monitor::inspect(&dir)?;
    out.emit(&ApplyReport {
        program: PROGRAM,
        status: Outcome::PolicyReplaced,
        mode: now.mode,
        generation,
        policy: now.policy,
    })?;
    Ok(())
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Detached {
    Detached,
    NotAttached,
}

#[derive(Debug, Serialize)]
struct DetachReport {
    program: &'static str,
    status: Detached,
    /// The links that were released; absent for leftover pins.
    #[serde(skip_serializing_if = "Option::is_none")]
    prog_ids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_ids: Option<Vec<u32>>,
}

impl Report for DetachReport {
    fn render(&self) -> String {
        match (&self.status, &self.link_ids) {
            (Detached::NotAttached, _) => {
                format!("{} is not attached; nothing to do", self.program)
            }
            (Detached::Detached, Some(links)) => format!(
                "detached {} (link ids {}) and removed its pins",
                self.program,
                ids(links)
            ),
            (Detached::Detached, None) => format!("removed leftover pins of {}", self.program),
        }
    }
}

/// `detach --lsm`: unhook lsm_monitor and remove its pins, in any mode.
pub fn detach(root: &StateRoot, out: &Output) -> Result<()> {
    caps::require("detach --lsm", &[caps::BPF])?;
    let removed = state::remove_host(root, &root.host_attachment(PROGRAM), lsm_monitor::inspect)?;
    let status = if removed.existed {
        Detached::Detached
    } else {
        Detached::NotAttached
    };
    let before = removed.before;
    out.emit(&DetachReport {
        program: PROGRAM,
        status,
        prog_ids: before.as_ref().map(|a| a.prog_ids.clone()),
        link_ids: before.map(|a| a.link_ids),
    })?;
    Ok(())
}
