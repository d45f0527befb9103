//! lsm_monitor: security events (exec, opens under watched paths, ptrace
//! attach, capability use, module loads) from BPF LSM hooks, or from
//! tracepoints where the kernel refuses them. The layout is
//! include/lsm_monitor.h, read through the skeleton.

use serde::Serialize;

pub mod counters;
pub mod events;

pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/lsm_monitor.skel.rs"));
}

pub const PROGRAM: &str = "lsm_monitor";
/// Pin names in `<root>/host/lsm_monitor/`.
pub const EVENTS_MAP: &str = "events";
pub const COUNTERS_MAP: &str = "counters";

/// How the monitor hooks in: BPF LSM, which can deny, or the tracepoint
/// fallback, which only audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Lsm,
    Tracepoint,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Lsm => "lsm",
            Method::Tracepoint => "tracepoint",
        }
    }
}
