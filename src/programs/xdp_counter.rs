//! xdp_counter: per-CPU packet and byte counters by L3 and L4 protocol.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::kernel::netdev::Interface;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{objinfo, verifier};

pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/xdp_counter.skel.rs"));
}

use skel::types::{l3_proto, l4_proto, traffic_counters};
pub use skel::XdpCounterSkel;

// SAFETY: generated #[repr(C)] struct of u64 fields only: any bytes are valid.
unsafe impl plain::Plain for traffic_counters {}

pub const PROGRAM: &str = "xdp_counter";
const COUNTERS_MAP: &str = "counters";

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

/// Opens and loads the program into the kernel, unattached.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
) -> Result<XdpCounterSkel<'obj>> {
    let (opts, _btf_path) = super::open_opts(btf)?;
    verifier::load(PROGRAM, || {
        skel::XdpCounterSkelBuilder::default()
            .open_opts(opts, object)?
            .load()
    })
}

/// Loads, attaches and pins; the link pin goes last and commits the attachment.
pub fn attach(
    dir: &AttachmentDir,
    iface: &Interface,
    mode: XdpMode,
    btf: Option<&Path>,
) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load(&mut object, btf)?;
    let prog = &skel.progs.xdp_counter;
    let link = xdp::create_link(prog.as_fd(), iface, mode)?;
    dir.create()?;
    objinfo::pin(skel.maps.counters.as_fd(), &dir.map(COUNTERS_MAP))?;
    objinfo::pin(prog.as_fd(), &dir.prog())?;
    objinfo::pin(link.as_fd(), &dir.link())?;
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
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
    let per_cpu = map
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading the counters map")?
        .unwrap_or_default();
    let mut total = traffic_counters::default();
    for bytes in per_cpu {
        let mut cpu = traffic_counters::default();
        plain::copy_from_bytes(&mut cpu, &bytes)
            .map_err(|e| anyhow::anyhow!("counters map value has an unexpected size: {e:?}"))?;
        for (sum, add) in total
            .l3
            .iter_mut()
            .zip(cpu.l3.iter())
            .chain(total.l4.iter_mut().zip(cpu.l4.iter()))
        {
            sum.packets += add.packets;
            sum.bytes += add.bytes;
        }
    }
    let slot = |c: &skel::types::traffic_counter| Counter {
        packets: c.packets,
        bytes: c.bytes,
    };
    let l3 = Breakdown(
        L3_NAMES
            .iter()
            .map(|(p, n)| (*n, slot(&total.l3[p.0 as usize])))
            .collect(),
    );
    let l4 = Breakdown(
        L4_NAMES
            .iter()
            .map(|(p, n)| (*n, slot(&total.l4[p.0 as usize])))
            .collect(),
    );
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
    let path = dir.map(COUNTERS_MAP);
    let map = MapHandle::from_pinned_path(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    read_counters(&map)
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
