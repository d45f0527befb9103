//! xdp_counter's metric families. The L3/L4 counters are laid out by
//! include/traffic_counters.h in every XDP program of meshbpf, so these
//! series cover xdp_mesh_filter's interfaces too.

use anyhow::Result;

use super::traffic;
use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, Family, Pair};

pub fn families(dirs: &[AttachmentDir]) -> Result<Vec<Family>> {
    let mut seen = Pair::new(
        "meshbpf_packets",
        "meshbpf",
        [
            "Packets the XDP program saw, by layer (l3 or l4) and protocol",
            "Bytes of the packets the XDP program saw, by layer (l3 or l4) and protocol",
        ],
    );
    for dir in dirs {
        let counted = traffic::read_pinned_counters(dir)?;
        for (layer, breakdown) in [("l3", &counted.l3), ("l4", &counted.l4)] {
            for (protocol, c) in &breakdown.0 {
                let labels = vec![
                    label("interface", &dir.interface),
                    label("layer", layer),
                    label("protocol", *protocol),
                ];
                seen.add(labels, c.packets, c.bytes);
            }
        }
    }
    Ok(seen.into_families().to_vec())
}
