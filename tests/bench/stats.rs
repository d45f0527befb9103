//! Medians and ranges of repeated samples, and the Markdown tables that show them.

/// What a row reports: on a noisy machine the median, with the range so a
/// reader sees how far single samples strayed.
#[derive(Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "no samples to summarize");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// `median` and `min–max` cells, each value rendered by `unit`.
    pub fn cells(&self, unit: fn(f64) -> String) -> [String; 2] {
        [
            unit(self.median),
            format!("{}–{}", unit(self.min), unit(self.max)),
        ]
    }

    /// `median − baseline` and `median ÷ baseline` cells.
    pub fn versus(&self, baseline: &Summary, unit: fn(f64) -> String) -> [String; 2] {
        let diff = self.median - baseline.median;
        let sign = if diff >= 0.0 { "+" } else { "−" };
        [
            format!("{sign}{}", unit(diff.abs())),
            format!("×{:.2}", self.median / baseline.median),
        ]
    }
}

/// A measured row: what it is, how to set it up, and its kept samples.
pub struct Row<K> {
    pub what: &'static str,
    pub kind: K,
    pub samples: Vec<f64>,
}

impl<K: Copy> Row<K> {
    pub fn new(what: &'static str, kind: K) -> Self {
        Row {
            what,
            kind,
            samples: Vec::new(),
        }
    }

    /// `what`, the median and range in ns, and the median's difference to
    /// `baseline`.
    pub fn ns_cells(&self, baseline: &Summary) -> Vec<String> {
        let summary = Summary::of(&self.samples);
        let mut cells = vec![self.what.to_string()];
        cells.extend(summary.cells(ns));
        cells.push(summary.versus(baseline, ns)[0].clone());
        cells
    }
}

/// Samples every row `rounds` times after one discarded warm-up round, in an
/// order that rotates each round, so drift on the machine hits all alike.
pub fn sample_rotating<K: Copy>(
    rows: &mut [Row<K>],
    rounds: usize,
    mut sample: impl FnMut(K) -> f64,
) {
    for round in 0..=rounds {
        let n = rows.len();
        for i in 0..n {
            let row = &mut rows[(i + round) % n];
            let value = sample(row.kind);
            if round > 0 {
                row.samples.push(value);
            }
        }
    }
}

pub fn ns(value: f64) -> String {
    format!("{value:.0} ns")
}

pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2} ms")
    } else {
        format!("{value:.1} ms")
    }
}

/// `10000` as `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let rule = vec!["---".to_string(); header.len()];
    let mut out = line(&header) + &line(&rule);
    for row in rows {
        out += &line(row);
    }
    out
}
