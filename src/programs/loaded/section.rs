//! How a program of a loaded object attaches, from its ELF section name
//! (libbpf's SEC() conventions), which meshbpf records at load time.

use crate::proto::Direction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    /// `tc/ingress`, `tcx/egress`...; plain `tc` and `classifier` name no
    /// direction and take ingress.
    Tc(Direction),
    Tracepoint {
        category: String,
        name: String,
    },
    RawTracepoint(String),
    /// tp_btf, fentry, fexit, fmod_ret, lsm: the kernel knows the target
    /// from load; `trampoline` says whether the hook needs a BPF trampoline.
    BtfTyped {
        kind: String,
        trampoline: bool,
    },
    CgroupSkb {
        egress: bool,
    },
    Kprobe {
        function: String,
        retprobe: bool,
    },
    Unsupported,
}

impl Hook {
    pub fn of(section: &str) -> Hook {
        let (kind, target) = match section.split_once('/') {
            Some((kind, target)) => (kind, Some(target)),
            None => (section, None),
        };
        match (kind, target) {
            ("xdp" | "xdp.frags", None) => Hook::Xdp,
            ("tc" | "classifier", None) => Hook::Tc(Direction::Ingress),
            ("tc" | "tcx", Some("ingress")) => Hook::Tc(Direction::Ingress),
            ("tc" | "tcx", Some("egress")) => Hook::Tc(Direction::Egress),
            ("tp" | "tracepoint", Some(target)) => match target.split_once('/') {
                Some((category, name)) if !category.is_empty() && !name.is_empty() => {
                    Hook::Tracepoint {
                        category: category.into(),
                        name: name.into(),
                    }
                }
                _ => Hook::Unsupported,
            },
            ("raw_tp" | "raw_tracepoint" | "raw_tp.w" | "raw_tracepoint.w", Some(name))
                if !name.is_empty() =>
            {
                Hook::RawTracepoint(name.into())
            }
            ("tp_btf", Some(_)) => Hook::BtfTyped {
                kind: kind.into(),
                trampoline: false,
            },
            (
                "fentry" | "fexit" | "fmod_ret" | "fentry.s" | "fexit.s" | "fmod_ret.s" | "lsm"
                | "lsm.s" | "freplace",
                Some(_),
            ) => Hook::BtfTyped {
                kind: kind.into(),
                trampoline: true,
            },
            ("cgroup_skb", Some("ingress")) => Hook::CgroupSkb { egress: false },
            ("cgroup_skb", Some("egress")) => Hook::CgroupSkb { egress: true },
            ("kprobe" | "kretprobe", Some(function)) if !function.is_empty() => Hook::Kprobe {
                function: function.into(),
                retprobe: kind == "kretprobe",
            },
            _ => Hook::Unsupported,
        }
    }

    /// Whether it attaches to a network interface (XDP, tc).
    pub fn on_interface(&self) -> bool {
        matches!(self, Hook::Xdp | Hook::Tc(_))
    }
}

/// The sections `attach --object` knows, for error messages.
pub const SUPPORTED: &str =
    "xdp, tc (tc/ingress, tc/egress, tcx/...), tp/CATEGORY/NAME, raw_tp/NAME, \
tp_btf/NAME, fentry/fexit/fmod_ret/lsm, cgroup_skb/ingress|egress, kprobe/kretprobe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_map_to_hooks() {
        assert_eq!(Hook::of("xdp"), Hook::Xdp);
        assert_eq!(Hook::of("xdp.frags"), Hook::Xdp);
        assert_eq!(Hook::of("xdp/devmap"), Hook::Unsupported);
        assert_eq!(Hook::of("tc"), Hook::Tc(Direction::Ingress));
        assert_eq!(Hook::of("tcx/egress"), Hook::Tc(Direction::Egress));
        assert_eq!(
            Hook::of("tp/syscalls/sys_enter_getppid"),
            Hook::Tracepoint {
                category: "syscalls".into(),
                name: "sys_enter_getppid".into()
            }
        );
        assert_eq!(Hook::of("tp/syscalls"), Hook::Unsupported);
        assert_eq!(
            Hook::of("raw_tp/sys_enter"),
            Hook::RawTracepoint("sys_enter".into())
        );
        assert_eq!(
            Hook::of("tp_btf/sys_enter"),
            Hook::BtfTyped {
                kind: "tp_btf".into(),
                trampoline: false
            }
        );
        assert_eq!(
            Hook::of("fentry/do_unlinkat"),
            Hook::BtfTyped {
                kind: "fentry".into(),
                trampoline: true
            }
        );
        assert_eq!(
            Hook::of("cgroup_skb/egress"),
            Hook::CgroupSkb { egress: true }
        );
        assert_eq!(
            Hook::of("kretprobe/do_unlinkat"),
            Hook::Kprobe {
                function: "do_unlinkat".into(),
                retprobe: true
            }
        );
        assert_eq!(Hook::of("socket"), Hook::Unsupported);
        assert!(Hook::of("tc/egress").on_interface());
        assert!(!Hook::of("raw_tp/sys_enter").on_interface());
    }
}
