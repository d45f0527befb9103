//! The hook probes' results, with what each missing hook costs meshbpf and
//! what it falls back to on this kernel.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::kernel::probe::{self, Hook, Outcome, Stage};

#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    #[serde(skip)]
    pub hook: Hook,
    pub available: bool,
    /// How it was shown to work, or the kernel's reason why not.
    pub detail: String,
    /// Where a refusal happened: setup, load or attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// The meshbpf features a missing hook takes away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disables: Option<&'static str>,
    /// What meshbpf uses instead on this kernel ("none" when nothing can).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// Hooks by name, in probe order: a JSON object.
#[derive(Debug, Clone)]
pub struct Hooks(pub Vec<HookReport>);

impl Hooks {
    pub fn all_available(&self) -> bool {
        self.0.iter().all(|h| h.available)
    }
}

impl Serialize for Hooks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for hook in &self.0 {
            map.serialize_entry(hook.hook.name(), hook)?;
        }
        map.end()
    }
}

/// Probes every hook against the running kernel.
pub fn probe_all() -> Hooks {
    describe(Hook::ALL.iter().map(|&h| (h, probe::probe(h))).collect())
}

pub fn describe(outcomes: Vec<(Hook, Outcome)>) -> Hooks {
    let available = |hook: Hook| {
        outcomes
            .iter()
            .any(|(h, outcome)| *h == hook && outcome.is_ok())
    };
    let reports = outcomes
        .iter()
        .map(|(hook, outcome)| match outcome {
            Ok(detail) => HookReport {
                hook: *hook,
                available: true,
                detail: detail.clone(),
                stage: None,
                errno: None,
                disables: None,
                fallback: None,
            },
            Err(refusal) => HookReport {
                hook: *hook,
                available: false,
                detail: refusal.reason.clone(),
                stage: Some(refusal.stage),
                errno: refusal.errno.map(probe::errno_name),
                disables: Some(disables(*hook)),
                fallback: Some(fallback(*hook, &available)),
            },
        })
        .collect();
    Hooks(reports)
}

fn disables(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => "attach: xdp_counter and xdp_mesh_filter (packet counters and filtering)",
        Hook::Tc => "tc_classifier's flow table through netlink clsact filters",
        Hook::Tcx => "tc_classifier's flow table through tcx links",
        Hook::Tracepoint => "tracepoint programs of loaded objects (syscall_latency needs none)",
        Hook::RawTp => "syscall_latency's raw_tp method, its fallback from tp_btf",
        Hook::TpBtf => "syscall_latency's tp_btf method, its first choice",
        Hook::Kprobe => "latency --function through kprobe/kretprobe",
        Hook::Fentry => "latency --function through fentry/fexit, its first choice",
        Hook::Lsm => {
            "lsm_monitor's BPF LSM method: enforce mode, and capability and module-request events"
        }
        Hook::CgroupSkb => "nothing meshbpf ships; other tools' cgroup_skb programs",
        Hook::Ringbuf => "lsm_monitor: its events reach `meshbpf events` through a ring buffer",
        Hook::LpmTrie => "attach --filter: xdp_mesh_filter keeps its CIDR rules in LPM tries",
    }
}

/// What stands in for a missing hook, given what this kernel has.
fn fallback(hook: Hook, available: &dyn Fn(Hook) -> bool) -> String {
    let first = |options: &[(Hook, &str)]| {
        options
            .iter()
            .find(|(h, _)| available(*h))
            .map_or("none", |(_, text)| text)
            .to_string()
    };
    const SYSCALLS_ONLY: &str = "syscall tracepoints only: no per-function latency";
    match hook {
        Hook::Tc => first(&[(Hook::Tcx, "tcx links")]),
        Hook::Tcx => first(&[(
            Hook::Tc,
            "netlink clsact filters (attach picks them by itself)",
        )]),
        Hook::Tracepoint => first(&[
            (
                Hook::RawTp,
                "raw_tp on raw_syscalls, which needs no tracefs",
            ),
            (
                Hook::TpBtf,
                "tp_btf on raw_syscalls, which needs no tracefs",
            ),
        ]),
        Hook::RawTp => first(&[(Hook::TpBtf, "tp_btf"), (Hook::Tracepoint, "tracepoints")]),
        Hook::TpBtf => first(&[(Hook::RawTp, "raw_tp"), (Hook::Tracepoint, "tracepoints")]),
        Hook::Fentry => first(&[
            (Hook::Kprobe, "kprobe/kretprobe"),
            (Hook::Tracepoint, SYSCALLS_ONLY),
            (Hook::RawTp, SYSCALLS_ONLY),
        ]),
        Hook::Kprobe => first(&[
            (Hook::Fentry, "fentry/fexit"),
            (Hook::Tracepoint, SYSCALLS_ONLY),
            (Hook::RawTp, SYSCALLS_ONLY),
        ]),
        Hook::LpmTrie => "none: attach without --filter still counts".into(),
        Hook::Lsm => first(&[(
            Hook::Tracepoint,
            "lsm_monitor's tracepoint method: exec, opens, ptrace and module loads, audit only",
        )]),
        Hook::Xdp | Hook::CgroupSkb | Hook::Ringbuf => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::probe::Refusal;

    fn refused(stage: Stage, errno: i32) -> Outcome {
        Err(Refusal {
            stage,
            errno: Some(errno),
            reason: "refused".into(),
        })
    }

    #[test]
    fn fallbacks_follow_what_the_kernel_has() {
        let hooks = describe(vec![
            (Hook::Tracepoint, Ok("attached".into())),
            (Hook::Kprobe, refused(Stage::Attach, libc::ENOENT)),
            (Hook::Fentry, refused(Stage::Load, libc::EPERM)),
            (Hook::Tcx, Ok("attached".into())),
            (Hook::Tc, refused(Stage::Attach, libc::EOPNOTSUPP)),
            (Hook::Lsm, refused(Stage::Load, libc::EPERM)),
        ]);
        let by = |hook: Hook| hooks.0.iter().find(|h| h.hook == hook).unwrap();
        assert_eq!(
            by(Hook::Fentry).fallback.as_deref(),
            Some("syscall tracepoints only: no per-function latency")
        );
        assert_eq!(by(Hook::Fentry).errno.as_deref(), Some("EPERM"));
        assert_eq!(by(Hook::Fentry).stage, Some(Stage::Load));
        assert_eq!(by(Hook::Tc).fallback.as_deref(), Some("tcx links"));
        assert_eq!(by(Hook::Tracepoint).fallback, None);
        assert!(by(Hook::Lsm)
            .fallback
            .as_deref()
            .unwrap()
            .starts_with("lsm_monitor's tracepoint method"));
        assert!(!hooks.all_available());
    }

    #[test]
    fn hooks_serialize_as_an_object_by_name() {
        let hooks = describe(vec![
            (Hook::Xdp, Ok("attached".into())),
            (Hook::Lsm, refused(Stage::Load, libc::EPERM)),
        ]);
        let v = serde_json::to_value(&hooks).unwrap();
        assert_eq!(
            v["xdp"],
            serde_json::json!({"available": true, "detail": "attached"})
        );
        assert_eq!(v["lsm"]["available"], false);
        assert_eq!(v["lsm"]["stage"], "load");
        assert_eq!(v["lsm"]["errno"], "EPERM");
        assert_eq!(v["lsm"]["fallback"], "none");
        assert!(v["lsm"]["disables"]
            .as_str()
            .unwrap()
            .contains("lsm_monitor"));
    }
}
