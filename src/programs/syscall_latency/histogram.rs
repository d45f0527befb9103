//! Log2 latency histograms as the kernel keeps them, summed over CPUs, and
//! what can be estimated from them.
//!
//! Bucket b counts latencies in [2^b, 2^(b+1)) ns (bucket 0 also counts 0);
//! the last bucket is open: it counts everything from its lower bound up.
//! A percentile is estimated inside the bucket that holds its rank, by
//! linear interpolation between the bucket's bounds: the estimate is never
//! off by more than the bucket's width, a factor of two.

use serde::Serialize;

/// Buckets per histogram; the kernel side's LAT_BUCKETS.
pub const BUCKETS: usize = super::latency_limits::LAT_BUCKETS.0 as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub count: u64,
    pub total_ns: u64,
    pub buckets: [u64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            count: 0,
            total_ns: 0,
            buckets: [0; BUCKETS],
        }
    }
}

/// One bucket as JSON shows it: its upper bound, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub le_ns: u64,
    pub count: u64,
}

/// The smallest latency bucket `b` counts.
pub fn lower_bound(b: usize) -> u64 {
    if b == 0 {
        0
    } else {
        1 << b
    }
}

/// The largest latency bucket `b` counts; u64::MAX for the open last one.
pub fn upper_bound(b: usize) -> u64 {
    if b + 1 >= BUCKETS {
        u64::MAX
    } else {
        (1 << (b + 1)) - 1
    }
}

impl Histogram {
    /// Adds one CPU's slot.
    pub fn add(&mut self, count: u64, total_ns: u64, buckets: &[u64]) {
        self.count += count;
        self.total_ns += total_ns;
        for (sum, n) in self.buckets.iter_mut().zip(buckets) {
            *sum += n;
        }
    }

    /// What happened since `earlier`, a reading of the same histogram.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut delta = Histogram {
            count: self.count.saturating_sub(earlier.count),
            total_ns: self.total_ns.saturating_sub(earlier.total_ns),
            ..Histogram::default()
        };
        for (b, slot) in delta.buckets.iter_mut().enumerate() {
            *slot = self.buckets[b].saturating_sub(earlier.buckets[b]);
        }
        delta
    }

    pub fn avg_ns(&self) -> Option<u64> {
        (self.count > 0).then(|| self.total_ns / self.count)
    }

    /// The estimated `p`-quantile (0 < p <= 1), None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
        let mut below = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            if n == 0 || below + n < rank {
                below += n;
                continue;
            }
            let (low, high) = (lower_bound(b), upper_bound(b));
            if high == u64::MAX {
                return Some(low);
            }
            let within = (rank - below) as f64 / n as f64;
            return Some(low + ((high - low) as f64 * within).round() as u64);
        }
        None
    }

    /// The upper bound of the highest bucket with a count.
    pub fn max_le_ns(&self) -> Option<u64> {
        self.buckets.iter().rposition(|&n| n > 0).map(upper_bound)
    }

    /// The buckets from the lowest to the highest one with a count.
    pub fn span(&self) -> Vec<Bucket> {
        let first = self.buckets.iter().position(|&n| n > 0);
        let last = self.buckets.iter().rposition(|&n| n > 0);
        match (first, last) {
            (Some(first), Some(last)) => (first..=last)
                .map(|b| Bucket {
                    le_ns: upper_bound(b),
                    count: self.buckets[b],
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(buckets: &[(usize, u64)]) -> Histogram {
        let mut h = Histogram::default();
        for &(b, n) in buckets {
            h.buckets[b] = n;
            h.count += n;
        }
        h
    }

    #[test]
    fn bounds_are_powers_of_two() {
        assert_eq!((lower_bound(0), upper_bound(0)), (0, 1));
        assert_eq!((lower_bound(1), upper_bound(1)), (2, 3));
        assert_eq!((lower_bound(20), upper_bound(20)), (1_048_576, 2_097_151));
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
        assert_eq!(BUCKETS, 40);
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket_of_their_rank() {
        // 100 values in [1024, 2047].
        let h = with(&[(10, 100)]);
        assert_eq!(h.percentile(0.5), Some(1024 + 512));
        assert_eq!(h.percentile(0.99), Some(1024 + 1013));
        assert_eq!(h.percentile(1.0), Some(2047));
        // 90 fast, 10 slow: p90 is still fast, p99 is slow.
        let h = with(&[(4, 90), (20, 10)]);
        assert_eq!(h.percentile(0.5), Some(16 + 8));
        assert_eq!(h.percentile(0.9), Some(31));
        assert_eq!(h.percentile(0.99), Some(1_048_576 + 943_718));
        assert_eq!(h.max_le_ns(), Some(2_097_151));
    }

    #[test]
    fn an_empty_histogram_has_no_estimates() {
        let h = Histogram::default();
        assert_eq!(h.percentile(0.5), None);
        assert_eq!(h.avg_ns(), None);
        assert_eq!(h.max_le_ns(), None);
        assert!(h.span().is_empty());
    }

    #[test]
    fn the_open_last_bucket_gives_its_lower_bound() {
        let h = with(&[(BUCKETS - 1, 3)]);
        assert_eq!(h.percentile(0.5), Some(1 << (BUCKETS - 1)));
        assert_eq!(h.max_le_ns(), Some(u64::MAX));
    }

    #[test]
    fn spans_keep_empty_buckets_between_counted_ones() {
        let h = with(&[(3, 1), (5, 2)]);
        assert_eq!(
            h.span(),
            vec![
                Bucket {
                    le_ns: 15,
                    count: 1
                },
                Bucket {
                    le_ns: 31,
                    count: 0
                },
                Bucket {
                    le_ns: 63,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn cpus_add_up_and_deltas_subtract() {
        let mut a = Histogram::default();
        let mut slots = [0u64; BUCKETS];
        slots[7] = 2;
        a.add(2, 300, &slots);
        a.add(2, 300, &slots);
        assert_eq!((a.count, a.total_ns, a.buckets[7]), (4, 600, 4));
        assert_eq!(a.avg_ns(), Some(150));
        let mut b = a.clone();
        b.add(1, 1000, &slots);
        let d = b.since(&a);
        assert_eq!((d.count, d.total_ns, d.buckets[7]), (1, 1000, 2));
    }
}
