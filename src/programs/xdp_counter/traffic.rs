//! The L3/L4 packet and byte breakdown that every XDP program of meshbpf
//! keeps in a per-CPU `counters` map laid out by include/traffic_counters.h.

use anyhow::Result;
use libbpf_rs::MapCore;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::skel::types::{l3_proto, l4_proto, traffic_counters};
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::programs::maps::{open_pinned_map, read_per_cpu};

// u64s only.
plain_data!(traffic_counters);

/// The map's name in every program and in the pin directory.
pub const COUNTERS_MAP: &str = "counters";

/// JSON and table names of the counter slots, bound to the C enums so that a
/// renumbering in the shared header cannot silently shift them.
const L3_NAMES: [(l3_proto, &str); 4] = [
    (l3_proto::L3_IPV4, "ipv4"),
    (l3_proto::L3_IPV6, "ipv6"),
    (l3_proto::L3_ARP, "arp"),
    (l3_proto::L3_OTHER, "other"),
];
const L4_NAMES: [(l4_proto, &str); 5] = [
    (l4_proto::L4_TCP, "tcp"),
    (l4_proto::L4_UDP, "udp"),
    (l4_proto::L4_ICMP, "icmp"),
    (l4_proto::L4_ICMPV6, "icmpv6"),
    (l4_proto::L4_OTHER, "other"),
];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn add(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
    }
}

/// Named counters that serialize as a JSON object in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown(pub Vec<(&'static str, Counter)>);

impl Breakdown {
    pub fn get(&self, name: &str) -> Counter {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

impl Serialize for Breakdown {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, counter) in &self.0 {
            map.serialize_entry(name, counter)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub l3: Breakdown,
    pub l4: Breakdown,
}

/// Sums the per-CPU slots of a counters map.
pub fn read_counters(map: &dyn MapCore) -> Result<Traffic> {
    let mut l3 = [Counter::default(); L3_NAMES.len()];
    let mut l4 = [Counter::default(); L4_NAMES.len()];
    for cpu in read_per_cpu::<traffic_counters>(map, 0)? {
        for (sum, (proto, _)) in l3.iter_mut().zip(L3_NAMES.iter()) {
            let c = &cpu.l3[proto.0 as usize];
            sum.add(c.packets, c.bytes);
        }
        for (sum, (proto, _)) in l4.iter_mut().zip(L4_NAMES.iter()) {
            let c = &cpu.l4[proto.0 as usize];
            sum.add(c.packets, c.bytes);
        }
    }
    let l3 = Breakdown(L3_NAMES.iter().map(|(_, n)| *n).zip(l3).collect());
    let l4 = Breakdown(L4_NAMES.iter().map(|(_, n)| *n).zip(l4).collect());
    // Every frame lands in exactly one L3 slot, so L3 sums to the totals.
    let packets = l3.0.iter().map(|(_, c)| c.packets).sum();
    let bytes = l3.0.iter().map(|(_, c)| c.bytes).sum();
    Ok(Traffic {
        packets,
        bytes,
        l3,
        l4,
    })
}

pub fn read_pinned_counters(dir: &AttachmentDir) -> Result<Traffic> {
    read_counters(&open_pinned_map(dir, COUNTERS_MAP)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_name() {
        assert_eq!(L3_NAMES.len(), l3_proto::L3_MAX.0 as usize);
        assert_eq!(L4_NAMES.len(), l4_proto::L4_MAX.0 as usize);
        assert_eq!(traffic_counters::default().l3.len(), L3_NAMES.len());
        assert_eq!(traffic_counters::default().l4.len(), L4_NAMES.len());
    }

    #[test]
    fn breakdowns_serialize_as_objects_in_slot_order() {
        let b = Breakdown(vec![
            (
                "tcp",
                Counter {
                    packets: 2,
                    bytes: 120,
                },
            ),
            ("udp", Counter::default()),
        ]);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"tcp":{"packets":2,"bytes":120},"udp":{"packets":0,"bytes":0}}"#
        );
        assert_eq!(b.get("tcp").bytes, 120);
        assert_eq!(b.get("sctp"), Counter::default());
    }
}
