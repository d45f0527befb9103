//! tc_classifier's metric families: flows in the table, created and
//! evicted, QoS class counters, and how full the flow table is.

use anyhow::Result;

use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, table_size, Family, Kind, Pair, Value};

pub fn families(dirs: &[AttachmentDir]) -> Result<Vec<Family>> {
    let mut flows = Family::new(
        "meshbpf_flows",
        Kind::Gauge,
        "Flows in tc_classifier's table now",
    );
    let mut created = Family::new(
        "meshbpf_flows_created",
        Kind::Counter,
        "Flows tc_classifier created",
    );
    let mut evicted = Family::new(
        "meshbpf_flow_evictions",
        Kind::Counter,
        "Flows the LRU table pushed out to make room",
    );
    let mut classes = Pair::new(
        "meshbpf_class_packets",
        "meshbpf_class",
        [
            "Packets per QoS class (attach --classes) and direction",
            "Bytes per QoS class (attach --classes) and direction",
        ],
    );
    let mut tables = Vec::new();
    for dir in dirs {
        let t = super::inspect(dir)?;
        let interface = &dir.interface;
        let on = || vec![label("interface", interface)];
        flows.add(on(), Value::Int(t.flows as u64));
        created.add(on(), Value::Int(t.flows_created));
        evicted.add(on(), Value::Int(t.evictions));
        for c in &t.classes {
            for (direction, counter) in [("ingress", c.ingress), ("egress", c.egress)] {
                let labels = vec![
                    label("interface", interface),
                    label("class", &c.class),
                    label("direction", direction),
                ];
                classes.add(labels, counter.packets, counter.bytes);
            }
        }
        tables.extend(table_size(interface, "flows", t.flows as u64, t.max_flows));
    }
    let mut families = vec![flows, created, evicted];
    families.extend(classes.into_families());
    families.extend(tables);
    Ok(families)
}
