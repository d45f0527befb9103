//! The L3/L4 packet and byte breakdown that every XDP program of meshbpf
//! keeps in a per-CPU `counters` map laid out by include/traffic_counters.h.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::kernel::pins::AttachmentDir;
use crate::programs::xdp_counter::skel::types::{l3_proto, l4_proto, traffic_counters};

// SAFETY: generated #[repr(C)] structs of u64 fields only: any bytes are valid.
unsafe impl plain::Plain for traffic_counters {}

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

/// A plain value's bytes, as a map key or value.
pub fn bytes<T: plain::Plain>(value: &T) -> &[u8] {
    // SAFETY: Plain types are plain old data, and the shared structs have
    // explicit padding fields, so every byte is initialized.
    unsafe { plain::as_bytes(value) }
}

/// The value of `key`, as `T`; None when the map has no such key.
pub fn lookup<T: plain::Plain + Default>(map: &dyn MapCore, key: &[u8]) -> Result<Option<T>> {
    let Some(raw) = map.lookup(key, MapFlags::ANY)? else {
        return Ok(None);
    };
    let mut value = T::default();
    plain::copy_from_bytes(&mut value, &raw)
        .map_err(|e| anyhow::anyhow!("unexpected value size: {e:?}"))?;
    Ok(Some(value))
}

/// Reads slot 0 of a per-CPU array on every CPU, as `T`.
pub fn read_per_cpu<T: plain::Plain + Default>(map: &dyn MapCore, key: u32) -> Result<Vec<T>> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading map {}", map.name().to_string_lossy()))?
        .unwrap_or_default();
    per_cpu
        .iter()
        .map(|bytes| {
            let mut value = T::default();
            plain::copy_from_bytes(&mut value, bytes)
                .map_err(|e| anyhow::anyhow!("map value has an unexpected size: {e:?}"))?;
            Ok(value)
        })
        .collect()
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

pub fn open_pinned_map(dir: &AttachmentDir, name: &str) -> Result<MapHandle> {
    let path = dir.map(name);
    MapHandle::from_pinned_path(&path).with_context(|| format!("opening {}", path.display()))
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
