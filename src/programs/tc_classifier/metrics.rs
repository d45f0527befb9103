//! tc_classifier's metric families: flows in the table, created and
//! evicted, QoS class counters, and how full the flow table is.

use crate::metrics::{label, Family, Kind, Pair, Scrape, TableUse, Value};

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let attachments = &scrape.stats.attachments;
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
    for a in attachments {
        let Some(t) = &a.flows else { continue };
        let interface = &a.attachment.interface;
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
                classes.add(labels, counter);
            }
        }
    }
    let mut families = vec![flows, created, evicted];
    families.extend(classes.into_families());
    families
}

/// Each flow table.
pub fn tables(scrape: &Scrape<'_>) -> Vec<TableUse> {
    scrape
        .stats
        .attachments
        .iter()
        .filter_map(|a| {
            let t = a.flows.as_ref()?;
            Some(TableUse {
                interface: a.attachment.interface.clone(),
                map: "flows",
                entries: t.flows as u64,
                capacity: t.max_flows,
            })
        })
        .collect()
}
