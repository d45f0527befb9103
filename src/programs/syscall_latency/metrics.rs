//! syscall_latency's metric family: its log2 histograms as a Prometheus
//! histogram per syscall.

use super::histogram::{self, BUCKETS};
use crate::kernel::syscalls;
use anyhow::Result;

use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, Family, Kind, Value};

/// Bucket b counts [2^b, 2^(b+1)) ns: its Prometheus upper bound is
/// 2^(b+1) ns in seconds; the open last bucket is +Inf.
pub fn families(dirs: &[AttachmentDir]) -> Result<Vec<Family>> {
    let mut family = Family::new(
        "meshbpf_syscall_latency",
        Kind::Histogram,
        "Syscall latency from syscall_latency's log2 buckets",
    )
    .unit("seconds");
    let histograms = dirs
        .iter()
        .map(super::read)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten();
    for (nr, h) in histograms.filter(|(_, h)| h.count > 0) {
        let buckets = (0..BUCKETS)
            .map(|b| {
                let le = match histogram::upper_bound(b) {
                    u64::MAX => f64::MAX,
                    max => (max + 1) as f64 / 1e9,
                };
                (le, h.buckets[b])
            })
            .collect();
        family.add(
            vec![label("syscall", syscalls::display_name(nr))],
            Value::Histogram {
                sum: h.total_ns as f64 / 1e9,
                count: h.count,
                buckets,
            },
        );
    }
    Ok(vec![family])
}
