//! Metric families as plain data: what one scrape read, named and labelled
//! the Prometheus way, before any text is written.

use crate::programs::xdp_counter::traffic::Counter;

pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// Sum, count, and (upper bound, count in that bucket alone); the last
    /// upper bound is f64::MAX, which encodes as +Inf.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Debug, Clone)]
pub struct Family {
    /// Without `_total` and without the unit, which the encoder appends.
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    pub samples: Vec<(Labels, Value)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family {
            name,
            help,
            unit: None,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = Some(unit);
        self
    }

    pub fn add(&mut self, labels: Labels, value: Value) {
        self.samples.push((labels, value));
    }
}

pub fn label(name: &'static str, value: impl Into<String>) -> (&'static str, String) {
    (name, value.into())
}

/// A packets family and its bytes twin, filled together.
pub struct Pair {
    packets: Family,
    bytes: Family,
}

impl Pair {
    /// `what` completes "Packets ..." and "Bytes of the packets ...".
    pub fn new(name: &'static str, bytes: &'static str, what: [&'static str; 2]) -> Self {
        Pair {
            packets: Family::new(name, Kind::Counter, what[0]),
            bytes: Family::new(bytes, Kind::Counter, what[1]).unit("bytes"),
        }
    }

    pub fn add(&mut self, labels: Labels, c: Counter) {
        self.packets.add(labels.clone(), Value::Int(c.packets));
        self.bytes.add(labels, Value::Int(c.bytes));
    }

    pub fn into_families(self) -> [Family; 2] {
        [self.packets, self.bytes]
    }
}
