//! xdp_mesh_filter's metric families: verdicts, per-rule hits, rate-limited
//! and SYN-dropped packets, and how full its rule table is.

use super::MAX_RULES;
use crate::metrics::{label, Family, Pair, Scrape, TableUse};
use crate::programs::xdp_counter::traffic::Counter;

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let (attachments, rules) = (&scrape.stats.attachments, &scrape.rules);
    let mut verdicts = Pair::new(
        "meshbpf_filter_verdict_packets",
        "meshbpf_filter_verdict",
        [
            "Packets xdp_mesh_filter passed or dropped",
            "Bytes of the packets xdp_mesh_filter passed or dropped",
        ],
    );
    let mut rate_limited = Pair::new(
        "meshbpf_filter_rate_limited_packets",
        "meshbpf_filter_rate_limited",
        [
            "Packets dropped by the per-source rate limit",
            "Bytes of the packets dropped by the per-source rate limit",
        ],
    );
    let mut syn_dropped = Pair::new(
        "meshbpf_filter_syn_dropped_packets",
        "meshbpf_filter_syn_dropped",
        [
            "TCP SYNs dropped by SYN-flood protection",
            "Bytes of the TCP SYNs dropped by SYN-flood protection",
        ],
    );
    for a in attachments {
        let Some(f) = &a.filter else { continue };
        let interface = &a.attachment.interface;
        for (verdict, c) in [("pass", f.verdicts.pass), ("drop", f.verdicts.drop)] {
            verdicts.add(
                vec![label("interface", interface), label("verdict", verdict)],
                c,
            );
        }
        rate_limited.add(vec![label("interface", interface)], f.rate_limited);
        syn_dropped.add(vec![label("interface", interface)], f.syn_dropped);
    }
    let mut hits = Pair::new(
        "meshbpf_filter_rule_packets",
        "meshbpf_filter_rule",
        [
            "Packets that matched a filter rule, by its index in the rule set",
            "Bytes of the packets that matched a filter rule, by its index in the rule set",
        ],
    );
    for (interface, active) in rules {
        for r in &active.rules {
            let labels = vec![
                label("interface", interface),
                label("rule", r.index.to_string()),
            ];
            hits.add(
                labels,
                Counter {
                    packets: r.packets,
                    bytes: r.bytes,
                },
            );
        }
    }
    [verdicts, hits, rate_limited, syn_dropped]
        .into_iter()
        .flat_map(Pair::into_families)
        .collect()
}

/// Each filter's rule table.
pub fn tables(scrape: &Scrape<'_>) -> Vec<TableUse> {
    scrape
        .rules
        .iter()
        .map(|(interface, r)| TableUse {
            interface: interface.clone(),
            map: "rules",
            entries: r.rules.len() as u64,
            capacity: MAX_RULES,
        })
        .collect()
}
