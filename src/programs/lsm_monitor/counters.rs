//! lsm_monitor's per-type counters: a per-CPU array with one slot per event
//! type, summed over CPUs.

use anyhow::Result;
use libbpf_rs::MapCore;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::skel::types::{lsm_counters, lsm_event_type};
use super::COUNTERS_MAP;
use crate::kernel::pins::AttachmentDir;
use crate::programs::traffic;

// SAFETY: a generated #[repr(C)] struct of u64 fields: any bytes are valid.
unsafe impl plain::Plain for lsm_counters {}

/// JSON and table names of the event types, bound to the C enum so that a
/// renumbering in the shared header cannot silently shift them.
pub const EVENT_TYPES: [(lsm_event_type, &str); 5] = [
    (lsm_event_type::LSM_EVENT_EXEC, "exec"),
    (lsm_event_type::LSM_EVENT_OPEN, "open"),
    (lsm_event_type::LSM_EVENT_PTRACE, "ptrace"),
    (lsm_event_type::LSM_EVENT_CAPABLE, "capable"),
    (lsm_event_type::LSM_EVENT_MODULE, "module"),
];

/// One event type's counts since attach.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TypeCounts {
    /// Events that qualified: delivered to the ring buffer or lost.
    pub events: u64,
    /// Dropped because the ring buffer was full.
    pub lost: u64,
    pub denied: u64,
    /// Would have been denied in enforce mode.
    pub audited: u64,
    /// capable() checks folded into an earlier event (rate limit).
    pub suppressed: u64,
}

/// Every event type's counts, in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters(pub Vec<(&'static str, TypeCounts)>);

impl Counters {
    pub fn get(&self, name: &str) -> TypeCounts {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    pub fn lost_total(&self) -> u64 {
        self.0.iter().map(|(_, c)| c.lost).sum()
    }

    /// Only the lost counts, by type: `{"exec":0,"open":12,...}`.
    pub fn lost_by_type(&self) -> LostByType<'_> {
        LostByType(self)
    }
}

#[derive(Debug)]
pub struct LostByType<'a>(&'a Counters);

impl LostByType<'_> {
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0 .0.iter().map(|(name, c)| (*name, c.lost))
    }
}

impl Serialize for LostByType<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0 .0.len()))?;
        for (name, lost) in self.counts() {
            map.serialize_entry(name, &lost)?;
        }
        map.end()
    }
}

pub fn read(map: &dyn MapCore) -> Result<Counters> {
    let mut by_type = Vec::with_capacity(EVENT_TYPES.len());
    for (slot, name) in EVENT_TYPES {
        let mut sum = TypeCounts::default();
        for cpu in traffic::read_per_cpu::<lsm_counters>(map, slot.0)? {
            sum.events += cpu.events;
            sum.lost += cpu.lost;
            sum.denied += cpu.denied;
            sum.audited += cpu.audited;
            sum.suppressed += cpu.suppressed;
        }
        by_type.push((name, sum));
    }
    Ok(Counters(by_type))
}

pub fn read_pinned(dir: &AttachmentDir) -> Result<Counters> {
    read(&traffic::open_pinned_map(dir, COUNTERS_MAP)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_name_in_slot_order() {
        assert_eq!(
            EVENT_TYPES.len(),
            lsm_event_type::LSM_EVENT_TYPES.0 as usize
        );
        for (i, (slot, _)) in EVENT_TYPES.iter().enumerate() {
            assert_eq!(slot.0 as usize, i);
        }
    }

    #[test]
    fn lost_counts_serialize_by_type() {
        let lost = |n| TypeCounts {
            events: 10,
            lost: n,
            ..TypeCounts::default()
        };
        let counters = Counters(vec![("exec", lost(1)), ("open", lost(5))]);
        assert_eq!(counters.lost_total(), 6);
        assert_eq!(counters.get("open").lost, 5);
        assert_eq!(counters.get("ptrace"), TypeCounts::default());
        assert_eq!(
            serde_json::to_string(&counters.lost_by_type()).unwrap(),
            r#"{"exec":1,"open":5}"#
        );
    }
}
