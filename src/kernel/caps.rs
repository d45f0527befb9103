//! Effective-capability checks, done before touching the kernel so a missing
//! privilege is named instead of surfacing as a bare EPERM.

use caps::CapSet;
pub use caps::Capability;

use crate::error::Failure;

pub fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// A capability an action needs, and what it is needed for.
pub struct Need {
    pub cap: Capability,
    pub why: &'static str,
}

pub const BPF: Need = Need {
    cap: Capability::CAP_BPF,
    why: "load programs and read maps",
};
pub const PERFMON: Need = Need {
    cap: Capability::CAP_PERFMON,
    why: "load tracing programs (tracepoints, kprobes, fentry, LSM)",
};
pub const NET_ADMIN: Need = Need {
    cap: Capability::CAP_NET_ADMIN,
    why: "attach to network interfaces",
};

pub const SYS_ADMIN: Need = Need {
    cap: Capability::CAP_SYS_ADMIN,
    why: "open programs and links by id, which is how meshbpf reads an attachment back",
};

/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as the kernel itself allows.
fn satisfied(need: &Need) -> bool {
    has(need.cap)
        || (matches!(need.cap, Capability::CAP_BPF | Capability::CAP_PERFMON)
            && has(Capability::CAP_SYS_ADMIN))
}

pub fn require(action: &str, needs: &[Need]) -> Result<(), Failure> {
    let missing: Vec<&Need> = needs.iter().filter(|n| !satisfied(n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|n| format!("{} (to {})", n.cap, n.why))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Failure::new(format!("{action} needs capabilities this process lacks: {list}")).hint(
        "run it as root (sudo meshbpf ...), or from a service with AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN",
    ))
}

/// Explains an EPERM from the kernel when the capabilities looked sufficient.
pub fn explain_eperm(what: &str) -> Failure {
    Failure::new(format!("the kernel refused to {what} (EPERM) although the needed capabilities are present"))
        .hint("check the kernel lockdown mode (/sys/kernel/security/lockdown), kernel.unprivileged_bpf_disabled and any LSM policy that restricts bpf()")
}
