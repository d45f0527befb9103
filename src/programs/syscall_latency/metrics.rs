//! syscall_latency's metric family: its log2 histograms as a Prometheus
//! histogram per syscall.

use super::histogram::{self, BUCKETS};
use crate::kernel::syscalls;
use crate::metrics::{label, Family, Kind, Scrape, Value};

/// Bucket b counts [2^b, 2^(b+1)) ns: its Prometheus upper bound is
/// 2^(b+1) ns in seconds; the open last bucket is +Inf.
pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let histograms = &scrape.latency;
    let mut family = Family::new(
        "meshbpf_syscall_latency",
        Kind::Histogram,
        "Syscall latency from syscall_latency's log2 buckets",
    )
    .unit("seconds");
    for (nr, h) in histograms.iter().filter(|(_, h)| h.count > 0) {
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
            vec![label("syscall", syscalls::display_name(*nr))],
            Value::Histogram {
                sum: h.total_ns as f64 / 1e9,
                count: h.count,
                buckets,
            },
        );
    }
    vec![family]
}
