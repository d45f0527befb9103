//! syscall_latency's metric family: its log2 histograms as a Prometheus
//! histogram per syscall.

use super::histogram::{self, BUCKETS};
use crate::kernel::syscalls;
use anyhow::Result;

use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, Family, Kind, Value};

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
            .map(|b| (le_seconds(b), h.buckets[b]))
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

/// Bucket b counts [2^b, 2^(b+1)) ns, whole nanoseconds: its Prometheus
/// upper bound ("less than or equal") is 2^(b+1) - 1 ns in seconds, so that
/// a latency of exactly 2^(b+1) ns is above it, as the kernel counts it; the
/// open last bucket is +Inf.
fn le_seconds(b: usize) -> f64 {
    match histogram::upper_bound(b) {
        u64::MAX => f64::MAX,
        max => max as f64 / 1e9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_of_exactly_a_power_of_two_is_in_the_bucket_the_kernel_counts_it_in() {
        // The kernel counts 1024 ns in bucket 10 (floor of log2).
        assert!(1024e-9 > le_seconds(9));
        assert!(1024e-9 <= le_seconds(10));
        assert!(1023e-9 <= le_seconds(9));
        assert_eq!(le_seconds(0), 1e-9);
        assert_eq!(le_seconds(BUCKETS - 1), f64::MAX);
    }
}
