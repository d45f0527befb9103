//! The machine and kernel as meshbpf needs them, and `--fix` for the mounts.

use crate::health::{Check, Fix};
use crate::kernel::btf::{KernelBtf, KERNEL_BTF};
use crate::kernel::caps::{self, Capability};
use crate::kernel::pins::StateRoot;
use crate::kernel::{bpffs, mounts, probe, sysinfo};

/// XDP through bpf_link and BPF_LINK_DETACH.
const MIN_KERNEL: (u32, u32) = (5, 9);

pub fn checks(root: &StateRoot) -> Vec<Check> {
    let mut checks = vec![kernel_version(), btf(), bpffs(root), tracefs()];
    checks.extend(CAPABILITIES.iter().map(capability));
    checks.extend([jit(), lockdown(), bpf_lsm(), bpf_stats()]);
    checks
}

fn kernel_version() -> Check {
    let release = sysinfo::release();
    match sysinfo::version(&release) {
        Some(version) if version >= MIN_KERNEL => Check::ok("kernel_version", format!("Linux {release}")),
        Some(_) => Check::fail(
            "kernel_version",
            format!(
                "Linux {release} is older than {}.{}, which meshbpf needs for XDP links and BPF_LINK_DETACH",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            "run meshbpf on Linux 5.9 or later",
        ),
        None => Check::warn(
            "kernel_version",
            format!("cannot tell the version of Linux '{release}'"),
            "meshbpf needs Linux 5.9 or later",
        ),
    }
}

fn btf() -> Check {
    match KernelBtf::open() {
        Ok(btf) => Check::ok(
            "btf",
            format!("{KERNEL_BTF}: {} types", btf.type_count()),
        ),
        Err(e) => Check::fail(
            "btf",
            format!("no usable kernel BTF at {KERNEL_BTF} ({e}): CO-RE programs cannot be relocated"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y, or give attach a vmlinux BTF with --btf FILE",
        ),
    }
}

fn bpffs(root: &StateRoot) -> Check {
    let root = root.path();
    if bpffs::is_on_bpffs(root) {
        return Check::ok("bpffs", format!("{} is on a bpffs", root.display()));
    }
    let hint = if root.starts_with(bpffs::DEFAULT_MOUNT) {
        format!(
            "meshbpf health --fix mounts one (mount -t bpf bpf {})",
            bpffs::DEFAULT_MOUNT
        )
    } else {
        format!(
            "mount one under it (mount -t bpf bpf DIR), or choose a root under {} with --bpffs",
            bpffs::DEFAULT_MOUNT
        )
    };
    Check::fail(
        "bpffs",
        format!(
            "{} is not on a bpffs: meshbpf cannot pin attachments there",
            root.display()
        ),
        hint,
    )
}

fn tracefs() -> Check {
    match mounts::tracefs() {
        Some(dir) => Check::ok("tracefs", format!("mounted at {}", dir.display())),
        None => Check::warn(
            "tracefs",
            format!(
                "not mounted at {}: tracepoint programs cannot be attached (raw_tp and tp_btf can)",
                mounts::TRACEFS
            ),
            format!(
                "meshbpf health --fix mounts it (mount -t tracefs tracefs {})",
                mounts::TRACEFS
            ),
        ),
    }
}

struct CapabilityUse {
    name: &'static str,
    cap: Capability,
    /// What meshbpf cannot do without it.
    needed_for: &'static str,
    /// The kernel accepts CAP_SYS_ADMIN in its place.
    sys_admin_stands_in: bool,
    /// Without it meshbpf's core commands fail, rather than some features.
    essential: bool,
}

const CAPABILITIES: [CapabilityUse; 4] = [
    CapabilityUse {
        name: "cap_bpf",
        cap: Capability::CAP_BPF,
        needed_for: "loading programs, creating and reading maps (every command)",
        sys_admin_stands_in: true,
        essential: true,
    },
    CapabilityUse {
        name: "cap_perfmon",
        cap: Capability::CAP_PERFMON,
        needed_for: "tracing programs (tracepoint, raw_tp, tp_btf, kprobe, fentry, LSM)",
        sys_admin_stands_in: true,
        essential: false,
    },
    CapabilityUse {
        name: "cap_net_admin",
        cap: Capability::CAP_NET_ADMIN,
        needed_for: "attaching XDP and TC programs to interfaces (attach, detach, filter)",
        sys_admin_stands_in: false,
        essential: true,
    },
    CapabilityUse {
        name: "cap_sys_admin",
        cap: Capability::CAP_SYS_ADMIN,
        needed_for:
            "reading programs and links by id (stats, flows, health), mounting bpffs and tracefs, \
the hook probes' throwaway network namespace",
        sys_admin_stands_in: false,
        essential: true,
    },
];

fn capability(role: &CapabilityUse) -> Check {
    if caps::has(role.cap) {
        return Check::ok(
            role.name,
            format!("effective; needed for {}", role.needed_for),
        );
    }
    if role.sys_admin_stands_in && caps::has(Capability::CAP_SYS_ADMIN) {
        return Check::ok(
            role.name,
            format!(
                "not effective, but CAP_SYS_ADMIN stands in for it: {}",
                role.needed_for
            ),
        );
    }
    let detail = format!(
        "{} is not in the effective set; it is needed for {}",
        role.cap, role.needed_for
    );
    let hint = format!(
        "run meshbpf as root, or grant {} (AmbientCapabilities= in a systemd unit, securityContext.capabilities.add in Kubernetes)",
        role.cap
    );
    if role.essential {
        Check::fail(role.name, detail, hint)
    } else {
        Check::warn(role.name, detail, hint)
    }
}

fn jit() -> Check {
    const SYSCTL: &str = "net.core.bpf_jit_enable";
    let hint = format!("sysctl -w {SYSCTL}=1");
    match sysinfo::sysctl(SYSCTL).as_deref() {
        Ok("1") => Check::ok("jit", "enabled: programs run as native code"),
        Ok("2") => Check::warn(
            "jit",
            "enabled, with every JITed image dumped to the kernel log",
            hint,
        ),
        Ok(_) => Check::warn(
            "jit",
            "disabled: programs run in the interpreter, several times slower",
            hint,
        ),
        // Only the initial network namespace has the sysctl.
        Err(e) => match probe::jit_compiles() {
            Some(true) => Check::ok(
                "jit",
                "enabled: a probe program was compiled to native code",
            ),
            Some(false) => Check::warn(
                "jit",
                "disabled: a probe program runs in the interpreter, several times slower",
                hint,
            ),
            None => Check::warn(
                "jit",
                format!("cannot read {SYSCTL} ({e}), and no probe program loads"),
                "run meshbpf on a kernel with CONFIG_BPF_JIT=y, with CAP_BPF",
            ),
        },
    }
}

fn lockdown() -> Check {
    match sysinfo::lockdown().as_deref() {
        Ok("none") => Check::ok("lockdown", "none"),
        Ok("integrity") => Check::ok(
            "lockdown",
            "integrity: BPF may not write user memory (bpf_probe_write_user), which meshbpf never does",
        ),
        Ok(mode) => Check::warn(
            "lockdown",
            format!("{mode}: BPF may not read kernel memory, and kprobes and perf are refused, so tracing programs cannot run"),
            "boot with lockdown=integrity (or none) to trace with meshbpf",
        ),
        Err(e) => Check::warn(
            "lockdown",
            format!("cannot read the lockdown mode from securityfs: {e}"),
            format!("mount securityfs (mount -t securityfs securityfs {}) or run as root", mounts::SECURITYFS),
        ),
    }
}

fn bpf_lsm() -> Check {
    match sysinfo::lsms() {
        Ok(lsms) if lsms.iter().any(|l| l == "bpf") => {
            Check::ok("bpf_lsm", format!("active LSMs: {}", lsms.join(",")))
        }
        Ok(lsms) => Check::warn(
            "bpf_lsm",
            format!(
                "bpf is not among the active LSMs ({}): LSM programs cannot run",
                lsms.join(",")
            ),
            format!(
                "boot a CONFIG_BPF_LSM=y kernel with lsm={},bpf",
                lsms.join(",")
            ),
        ),
        Err(e) => Check::warn(
            "bpf_lsm",
            format!("cannot read the active LSMs from securityfs: {e}"),
            format!(
                "mount securityfs (mount -t securityfs securityfs {}) or run as root",
                mounts::SECURITYFS
            ),
        ),
    }
}

fn bpf_stats() -> Check {
    const SYSCTL: &str = "kernel.bpf_stats_enabled";
    match sysinfo::sysctl(SYSCTL).as_deref() {
        Ok("0") => Check::ok(
            "bpf_stats",
            format!("{SYSCTL}=0: run counts and times grow only while a process enables them, as `meshbpf stats --sample` does for its window"),
        ),
        Ok(value) => Check::ok(
            "bpf_stats",
            format!("{SYSCTL}={value}: every program run is timed (a few ns each), and `meshbpf stats` shows the totals"),
        ),
        Err(e) => Check::warn(
            "bpf_stats",
            format!("cannot read {SYSCTL}: {e}"),
            "run-time statistics need Linux 5.1 or later",
        ),
    }
}

/// Mounts bpffs for the root and tracefs, where they are missing.
pub fn fix_mounts(root: &StateRoot) -> Vec<Fix> {
    let mut fixes = Vec::new();
    if !bpffs::is_on_bpffs(root.path()) {
        let mounted = bpffs::ensure_mounted(root.path()).map(|at| {
            format!(
                "mounted bpffs at {}",
                at.as_deref().unwrap_or(root.path()).display()
            )
        });
        fixes.push(Fix::of("mount_bpffs", mounted));
    }
    if mounts::tracefs().is_none() {
        let mounted =
            mounts::mount_tracefs().map(|at| format!("mounted tracefs at {}", at.display()));
        fixes.push(Fix::of("mount_tracefs", mounted));
    }
    fixes
}
