//! How often programs ran and for how long. The kernel counts this only
//! while run-time statistics are on: for everyone through the
//! `kernel.bpf_stats_enabled` sysctl, or for as long as some process holds
//! a BPF_ENABLE_STATS fd. meshbpf takes the fd for a sample window and
//! never touches the sysctl.

use std::os::fd::OwnedFd;

use anyhow::Result;
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::{bpfobj, ffi};

/// Run-time statistics stay on while this lives.
pub struct StatsEnabled {
    _fd: OwnedFd,
}

impl StatsEnabled {
    pub fn enable() -> Result<Self> {
        // SAFETY: a plain call that returns a fresh fd or -errno.
        let fd = unsafe { ffi::fd(libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME)) }
            .map_err(|err| {
                anyhow::Error::new(err).context(
                    Failure::new("the kernel refused to enable run-time statistics (BPF_ENABLE_STATS)")
                        .hint("this needs Linux 5.8 or later and CAP_SYS_ADMIN; without --sample, stats shows what the kernel counted while kernel.bpf_stats_enabled was 1"),
                )
            })?;
        Ok(StatsEnabled { _fd: fd })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl RunStats {
    pub fn of(prog_id: u32) -> Result<Self> {
        Ok(Self::from_info(&bpfobj::prog_info_by_id(prog_id)?))
    }

    /// The counters of program info already read.
    pub fn from_info(info: &bpfobj::ProgInfo) -> Self {
        RunStats {
            run_cnt: info.run_cnt,
            run_time_ns: info.run_time_ns,
        }
    }

    /// What was counted between `before` and this.
    pub fn since(self, before: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
        }
    }

    pub fn avg_run_time_ns(self) -> Option<u64> {
        (self.run_cnt > 0).then(|| self.run_time_ns / self.run_cnt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_averages() {
        let before = RunStats {
            run_cnt: 10,
            run_time_ns: 500,
        };
        let after = RunStats {
            run_cnt: 30,
            run_time_ns: 1500,
        };
        let delta = after.since(before);
        assert_eq!(
            delta,
            RunStats {
                run_cnt: 20,
                run_time_ns: 1000
            }
        );
        assert_eq!(delta.avg_run_time_ns(), Some(50));
        assert_eq!(RunStats::default().avg_run_time_ns(), None);
    }
}
