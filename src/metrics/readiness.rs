//! `meshbpf_feature_ready{feature,mode}`: what this host can run, from
//! health's hook probes, so a fleet sees which hosts run a degraded mode.
//! The probes load and attach programs, so serve keeps their results for
//! [`PROBE_TTL`] instead of probing on every scrape.

use std::time::{Duration, Instant};

use super::model::{label, Family, Kind, Value};
use crate::health::hooks::{self, Hooks};
use crate::health::{Check, Status};
use crate::kernel::probe::Hook;

/// How long probe results are kept. Hooks come and go only with the
/// kernel's configuration or a mount (tracefs for tracepoints), so five
/// minutes is soon enough to see one, and a scrape every 15 s probes once
/// in 20.
pub const PROBE_TTL: Duration = Duration::from_secs(300);

/// The meshbpf feature each probed hook runs, and the mode it gives it.
fn feature_mode(hook: Hook) -> (&'static str, &'static str) {
    match hook {
        Hook::Xdp => ("xdp", "generic"),
        Hook::Tcx => ("tc_classifier", "tcx"),
        Hook::Tc => ("tc_classifier", "netlink"),
        Hook::TpBtf => ("syscall_latency", "tp_btf"),
        Hook::RawTp => ("syscall_latency", "raw_tp"),
        Hook::Fentry => ("function_latency", "fentry"),
        Hook::Kprobe => ("function_latency", "kprobe"),
        Hook::Lsm => ("lsm_monitor", "lsm"),
        Hook::Tracepoint => ("lsm_monitor", "tracepoint"),
        Hook::Ringbuf => ("lsm_events", "ringbuf"),
        Hook::LpmTrie => ("filter", "lpm_trie"),
        Hook::CgroupSkb => ("objects", "cgroup_skb"),
    }
}

/// Probe results, kept between scrapes.
#[derive(Debug, Default)]
pub struct Readiness {
    probed: Option<(Instant, Hooks)>,
}

impl Readiness {
    /// The gauge, probing again when the kept results are older than the
    /// TTL. The BTF source comes from health's `btf` check, which every
    /// scrape runs anyway.
    pub fn family(&mut self, checks: &[Check]) -> Family {
        let stale = self
            .probed
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= PROBE_TTL);
        if stale {
            let started = Instant::now();
            let hooks = hooks::probe_all();
            log::debug!("probed the hooks in {:?}", started.elapsed());
            self.probed = Some((Instant::now(), hooks));
        }
        let mut family = Family::new(
            "meshbpf_feature_ready",
            Kind::Gauge,
            "1 when this kernel runs a meshbpf feature in this mode (health's hook probes), else 0",
        );
        if let Some((_, hooks)) = &self.probed {
            for report in &hooks.0 {
                let (feature, mode) = feature_mode(report.hook);
                family.add(
                    vec![label("feature", feature), label("mode", mode)],
                    Value::Int(u64::from(report.available)),
                );
            }
        }
        let btf = checks
            .iter()
            .any(|c| c.name == "btf" && c.status == Status::Ok);
        family.add(
            vec![label("feature", "btf"), label("mode", "kernel")],
            Value::Int(u64::from(btf)),
        );
        family
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_its_own_feature_and_mode() {
        let mut pairs: Vec<_> = Hook::ALL.iter().map(|&h| feature_mode(h)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), Hook::ALL.len());
    }
}
