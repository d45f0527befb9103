//! Metric families as plain data: what one scrape read, named and labelled
//! the Prometheus way, before any text is written.

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

    pub fn add(&mut self, labels: Labels, packets: u64, bytes: u64) {
        self.packets.add(labels.clone(), Value::Int(packets));
        self.bytes.add(labels, Value::Int(bytes));
    }

    pub fn into_families(self) -> [Family; 2] {
        [self.packets, self.bytes]
    }
}

/// How full a table of an attachment is: its series of
/// `meshbpf_map_entries` and `meshbpf_map_capacity`, which every program
/// with a table that fills up adds to.
pub fn table_size(interface: &str, map: &str, entries: u64, capacity: u32) -> [Family; 2] {
    let labels = vec![label("interface", interface), label("map", map)];
    let mut used = Family::new(
        "meshbpf_map_entries",
        Kind::Gauge,
        "Entries in a map meshbpf counts",
    );
    used.add(labels.clone(), Value::Int(entries));
    let mut max = Family::new(
        "meshbpf_map_capacity",
        Kind::Gauge,
        "Maximum entries of a map meshbpf counts",
    );
    max.add(labels, Value::Int(u64::from(capacity)));
    [used, max]
}

/// Families of one name joined into the first of them, in the order they
/// came: programs that share a family (the XDP programs' traffic, every
/// table's size) each add their own series.
pub fn merge(families: Vec<Family>) -> Vec<Family> {
    let mut merged: Vec<Family> = Vec::new();
    for family in families {
        match merged.iter_mut().find(|f| f.name == family.name) {
            Some(first) => first.samples.extend(family.samples),
            None => merged.push(family),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_one_name_merge_into_the_first_in_order() {
        let mut families = table_size("eth0", "rules", 3, 16384).to_vec();
        families.push(Family::new("meshbpf_up", Kind::Gauge, "up"));
        families.extend(table_size("eth0", "flows", 10, 65536));
        let merged = merge(families);
        let names: Vec<_> = merged.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["meshbpf_map_entries", "meshbpf_map_capacity", "meshbpf_up"]
        );
        let maps: Vec<_> = merged[0]
            .samples
            .iter()
            .map(|(labels, value)| (labels[1].1.as_str(), value.clone()))
            .collect();
        assert_eq!(maps, [("rules", Value::Int(3)), ("flows", Value::Int(10))]);
        assert_eq!(merged[1].samples[1].1, Value::Int(65536));
    }
}
