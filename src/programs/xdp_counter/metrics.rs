//! xdp_counter's metric families. The L3/L4 counters are laid out by
//! include/traffic_counters.h in every XDP program of meshbpf, so these
//! series cover xdp_mesh_filter's interfaces too.

use crate::metrics::{label, Family, Pair, Scrape};

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let attachments = &scrape.stats.attachments;
    let mut traffic = Pair::new(
        "meshbpf_packets",
        "meshbpf",
        [
            "Packets the XDP program saw, by layer (l3 or l4) and protocol",
            "Bytes of the packets the XDP program saw, by layer (l3 or l4) and protocol",
        ],
    );
    for a in attachments {
        for (layer, breakdown) in [("l3", &a.traffic.l3), ("l4", &a.traffic.l4)] {
            for (protocol, c) in &breakdown.0 {
                let labels = vec![
                    label("interface", &a.attachment.interface),
                    label("layer", layer),
                    label("protocol", *protocol),
                ];
                traffic.add(labels, *c);
            }
        }
    }
    traffic.into_families().to_vec()
}
