//! lsm_monitor: security events (exec, opens under watched paths, ptrace
//! attach, capability use, module loads) through one ring buffer, audited
//! or denied by a policy that is replaced atomically.
//!
//! Two program sets share the maps and one is loaded: BPF LSM, which can
//! deny, where bpf is an active LSM and the kernel takes the programs; else
//! the tracepoint fallback, which only audits (`setup`). The policy lives
//! in two generations of every policy map (`policy_maps`); per-type event
//! counters are summed over CPUs (`counters`). The layout is
//! include/lsm_monitor.h, read through the skeleton.

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::{bpfobj, clock};
use crate::programs::{Facets, Scope};

pub mod counters;
pub mod events;
pub mod health;
pub mod metrics;
pub mod policy_maps;
pub mod setup;
pub mod skel;
pub mod stats;

pub use counters::EventCounts;
pub use policy_maps::PolicySummary;
pub use setup::{attach, Attached};

pub use skel::LsmMonitorSkel;

pub const PROGRAM: &str = "lsm_monitor";

pub const FACETS: Facets = Facets {
    name: PROGRAM,
    scope: Scope::Host,
    metrics: metrics::families,
    health: Some(health::checks),
    stats: Some(|dir| Ok(Box::new(stats(dir)?))),
};

/// Map pins in `<root>/host/lsm_monitor/`, by the maps' own names; the
/// frozen .rodata (the syscall numbers of the fallback) is `config`.
pub const EVENTS_MAP: &str = "events";
pub const COUNTERS_MAP: &str = "counters";
pub const CONFIG_MAP: &str = "config";
const PROG_PIN_PREFIX: &str = "prog_";
const LINK_PIN_PREFIX: &str = "link_";

/// The programs of the BPF LSM set, in the order they are hooked.
const LSM_PROGRAMS: [&str; 7] = [
    "lsm_open",
    "lsm_exec",
    "lsm_ptrace",
    "lsm_capable",
    "lsm_read_file",
    "lsm_load_data",
    "lsm_mod_request",
];
/// The programs of the fallback set, in the order they are hooked.
const TRACEPOINT_PROGRAMS: [&str; 3] = ["tp_exec", "tp_sys_enter", "tp_sys_exit"];

/// How the monitor hooks in; every event is labelled with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// BPF LSM hooks: audit or enforce.
    Lsm,
    /// sched_process_exec and raw sys_enter/sys_exit: audit only.
    Tracepoint,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Lsm => "lsm",
            Method::Tracepoint => "tracepoint",
        }
    }

    /// The programs of this method's set, in hooking order; the last one's
    /// link is the attachment's commit point.
    fn programs(self) -> &'static [&'static str] {
        match self {
            Method::Lsm => &LSM_PROGRAMS,
            Method::Tracepoint => &TRACEPOINT_PROGRAMS,
        }
    }

    fn from_prog_type(prog_type: u32) -> Option<Method> {
        match prog_type {
            libbpf_sys::BPF_PROG_TYPE_LSM => Some(Method::Lsm),
            libbpf_sys::BPF_PROG_TYPE_TRACEPOINT | libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT => {
                Some(Method::Tracepoint)
            }
            _ => None,
        }
    }
}

/// Audit reports what the policy would deny; enforce denies it (BPF LSM
/// only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Audit,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }

    pub fn of(enforce: bool) -> Mode {
        if enforce {
            Mode::Enforce
        } else {
            Mode::Audit
        }
    }
}

fn prog_pin(dir: &AttachmentDir, program: &str) -> std::path::PathBuf {
    dir.pin(&format!("{PROG_PIN_PREFIX}{program}"))
}

fn link_pin(dir: &AttachmentDir, program: &str) -> std::path::PathBuf {
    dir.pin(&format!("{LINK_PIN_PREFIX}{program}"))
}

/// The host-wide attachment as `attach`, `stats` and `health` show it.
#[derive(Debug, Clone, Serialize)]
pub struct LsmAttachment {
    pub program: &'static str,
    pub mode: Mode,
    pub method: Method,
    /// RFC 3339; the kernel's load time of the programs.
    pub attached_at: String,
    pub prog_ids: Vec<u32>,
    pub link_ids: Vec<u32>,
    pub pin_path: String,
    pub policy: PolicySummary,
}

/// The method of a committed attachment, from the program its commit link
/// runs.
fn pinned_method(dir: &AttachmentDir) -> Result<(Method, u64)> {
    let fd = bpfobj::open_pinned(&dir.link())?;
    let link = bpfobj::link_info(fd.as_fd())
        .with_context(|| format!("inspecting {}", dir.link().display()))?;
    let prog = bpfobj::prog_info_by_id(link.prog_id)?;
    let method = Method::from_prog_type(prog.prog_type).ok_or_else(|| {
        Failure::new(format!(
            "{} holds a link to program '{}', which is not lsm_monitor's",
            dir.link().display(),
            prog.name
        ))
        .hint("meshbpf detach --lsm removes it")
    })?;
    Ok((method, prog.load_time_ns))
}

/// Reads a committed attachment back from its pins and the kernel.
pub fn inspect(dir: &AttachmentDir) -> Result<LsmAttachment> {
    let (method, load_time_ns) = pinned_method(dir)?;
    let mut prog_ids = Vec::new();
    let mut link_ids = Vec::new();
    for program in method.programs() {
        let pin = link_pin(dir, program);
        let fd = bpfobj::open_pinned(&pin)?;
        let link = bpfobj::link_info(fd.as_fd())
            .with_context(|| format!("inspecting {}", pin.display()))?;
        prog_ids.push(link.prog_id);
        link_ids.push(link.id);
    }
    let maps = policy_maps::PinnedPolicyMaps::open(dir)?;
    let policy = policy_maps::summary(&maps.maps())?;
    Ok(LsmAttachment {
        program: PROGRAM,
        mode: policy.mode,
        method,
        attached_at: clock::rfc3339(clock::boottime_to_wall(load_time_ns)),
        prog_ids,
        link_ids,
        pin_path: dir.path.display().to_string(),
        policy,
    })
}

/// The per-type counters of a committed attachment.
pub fn read_counters(dir: &AttachmentDir) -> Result<EventCounts> {
    let map = crate::programs::maps::open_pinned_map(dir, COUNTERS_MAP)?;
    counters::read(&map)
}

/// The attachment with its event counts, as `stats` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LsmStats {
    #[serde(flatten)]
    pub attachment: LsmAttachment,
    pub events: EventCounts,
    /// Events the ring buffer had no room for, every type together.
    pub lost_total: u64,
}

pub fn stats(dir: &AttachmentDir) -> Result<LsmStats> {
    let events = read_counters(dir)?;
    Ok(LsmStats {
        attachment: inspect(dir)?,
        lost_total: events.lost_total(),
        events,
    })
}

/// "BPF LSM" or "tracepoints (audit only)".
pub fn describe_method(method: Method) -> &'static str {
    match method {
        Method::Lsm => "BPF LSM",
        Method::Tracepoint => "tracepoints (audit only)",
    }
}

/// The policy in words, for attach, apply and stats.
pub fn describe_policy(p: &PolicySummary) -> String {
    let mut denies = Vec::new();
    if p.deny_write_prefixes > 0 {
        denies.push(format!("writes under {}", prefixes(p.deny_write_prefixes)));
    }
    if p.deny_exec_prefixes > 0 {
        denies.push(format!("exec from {}", prefixes(p.deny_exec_prefixes)));
    }
    if p.deny_ptrace_other_users {
        denies.push("ptrace of other users' processes".into());
    }
    if p.deny_modules {
        denies.push("module loads".into());
    }
    let denies = if denies.is_empty() {
        "nothing".to_string()
    } else {
        denies.join(", ")
    };
    format!(
        "policy generation {}: watches {}; denies {denies}; allows {} uids, {} comms, {} cgroups",
        p.generation,
        prefixes(p.watched_prefixes),
        p.allow_uids,
        p.allow_comms,
        p.allow_cgroups
    )
}

fn prefixes(n: usize) -> String {
    match n {
        1 => "1 prefix".to_string(),
        n => format!("{n} prefixes"),
    }
}
