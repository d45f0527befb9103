//! lsm_monitor host-wide: `attach --lsm [--policy F] [--enforce]`,
//! `detach --lsm`, and `lsm apply`, which replaces the policy atomically.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{LsmApplyArgs, LsmTargetArgs};
use crate::error::Failure;
use crate::kernel::pins::StateRoot;
use crate::kernel::{bpffs, caps};
use crate::output::{Output, Report};
use crate::programs::lsm_monitor::{self, LsmAttachment, Mode, PolicySummary, PROGRAM};
use crate::rules::policy::{self, CompiledPolicy};
use crate::state::{host, host::LsmOutcome};

#[derive(Debug, Serialize)]
struct AttachReport {
    status: LsmOutcome,
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
            LsmOutcome::Attached => format!(
                "attached {} host-wide with {} in {} mode (prog ids {}, link ids {}); pinned at {}",
                a.program,
                lsm_monitor::describe_method(a.method),
                a.mode.as_str(),
                ids(&a.prog_ids),
                ids(&a.link_ids),
                a.pin_path
            ),
            LsmOutcome::AlreadyAttached => format!(
                "{} is already attached with {} in {} mode since {}; nothing changed",
                a.program,
                lsm_monitor::describe_method(a.method),
                a.mode.as_str(),
                a.attached_at
            ),
            LsmOutcome::PolicyReplaced => format!(
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

/// Reads, checks and compiles a policy file, before anything changes.
fn compile(root: &StateRoot, path: &Path, mode: Mode) -> Result<CompiledPolicy> {
    let policy = policy::load(path).map_err(Failure::from)?;
    policy.check_lockout(mode == Mode::Enforce, root.path())?;
    policy.compile()
}

/// `attach --lsm`: attach lsm_monitor, or replace the policy of the one
/// attached.
pub fn attach(root: &StateRoot, out: &Output, args: &LsmTargetArgs) -> Result<()> {
    let mode = Mode::of(args.enforce);
    let compiled = args
        .policy
        .as_deref()
        .map(|p| compile(root, p, mode))
        .transpose()?;
    caps::require("attach --lsm", &[caps::BPF, caps::PERFMON, caps::SYS_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    let done = host::attach_lsm(root, compiled, mode, args.btf.as_deref())?;
    if let Some(tracefs) = &done.mounted_tracefs {
        out.note(&format!("mounted tracefs at {}", tracefs.display()));
    }
    out.emit(&AttachReport {
        status: done.status,
        attachment: done.attachment,
        fallback_reason: done.fallback_reason,
    })?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    program: &'static str,
    status: LsmOutcome,
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

/// `lsm apply POLICY [--enforce | --audit]`.
pub fn apply(root: &StateRoot, out: &Output, args: &LsmApplyArgs) -> Result<()> {
    let policy = policy::load(&args.policy).map_err(Failure::from)?;
    caps::require("lsm apply", &[caps::BPF])?;
    let mode = match (args.enforce, args.audit) {
        (true, _) => Some(Mode::Enforce),
        (_, true) => Some(Mode::Audit),
        _ => None,
    };
    let done = host::apply_lsm_policy(root, &policy, mode)?;
    out.emit(&ApplyReport {
        program: PROGRAM,
        status: LsmOutcome::PolicyReplaced,
        mode: done.attachment.mode,
        generation: done.generation,
        policy: done.attachment.policy,
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
    let removed = host::detach(root, PROGRAM, lsm_monitor::inspect)?;
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
