//! The per-type event counters, a per-CPU array indexed by event type,
//! summed over CPUs.

use anyhow::Result;
use libbpf_rs::MapCore;
use serde::Serialize;

use super::skel::types::{lsm_counters, lsm_event_type};
use crate::kernel::pod::plain_data;
use crate::programs::maps;

// u64s only.
plain_data!(lsm_counters);

/// One event type's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// Events that qualified: delivered to the ring buffer or lost.
    pub events: u64,
    pub delivered: u64,
    /// The ring buffer was full.
    pub lost: u64,
    pub denied: u64,
    /// Would have been denied in enforce mode.
    pub audited: u64,
    /// capable() checks folded into an earlier event of the same process
    /// and capability.
    pub suppressed: u64,
}

impl TypeCounts {
    fn add(&mut self, c: &lsm_counters) {
        self.events += c.events;
        self.lost += c.lost;
        self.denied += c.denied;
        self.audited += c.audited;
        self.suppressed += c.suppressed;
        self.delivered = self.events.saturating_sub(self.lost);
    }
}

/// Every type's counts, by the names events carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub exec: TypeCounts,
    pub open: TypeCounts,
    pub ptrace: TypeCounts,
    pub capable: TypeCounts,
    pub module: TypeCounts,
}

impl EventCounts {
    /// The counts of the event type with this index (enum lsm_event_type).
    fn slot(&mut self, event_type: u32) -> Option<&mut TypeCounts> {
        match lsm_event_type(event_type) {
            lsm_event_type::LSM_EVENT_EXEC => Some(&mut self.exec),
            lsm_event_type::LSM_EVENT_OPEN => Some(&mut self.open),
            lsm_event_type::LSM_EVENT_PTRACE => Some(&mut self.ptrace),
            lsm_event_type::LSM_EVENT_CAPABLE => Some(&mut self.capable),
            lsm_event_type::LSM_EVENT_MODULE => Some(&mut self.module),
            _ => None,
        }
    }

    pub fn by_type(&self) -> [(&'static str, &TypeCounts); 5] {
        [
            ("exec", &self.exec),
            ("open", &self.open),
            ("ptrace", &self.ptrace),
            ("capable", &self.capable),
            ("module", &self.module),
        ]
    }

    pub fn lost_total(&self) -> u64 {
        self.by_type().iter().map(|(_, c)| c.lost).sum()
    }
}

/// Sums the `counters` map over CPUs.
pub fn read(map: &dyn MapCore) -> Result<EventCounts> {
    let mut counts = EventCounts::default();
    for event_type in 0..lsm_event_type::LSM_EVENT_TYPES.0 {
        let per_cpu = maps::read_per_cpu::<lsm_counters>(map, event_type)?;
        if let Some(slot) = counts.slot(event_type) {
            for cpu in &per_cpu {
                slot.add(cpu);
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_add_up_and_delivered_is_what_was_not_lost() {
        let mut counts = EventCounts::default();
        let cpu = |events, lost| lsm_counters {
            events,
            lost,
            denied: 1,
            audited: 2,
            suppressed: 3,
        };
        let slot = counts.slot(lsm_event_type::LSM_EVENT_OPEN.0).unwrap();
        slot.add(&cpu(10, 4));
        slot.add(&cpu(5, 0));
        assert_eq!(
            counts.open,
            TypeCounts {
                events: 15,
                delivered: 11,
                lost: 4,
                denied: 2,
                audited: 4,
                suppressed: 6
            }
        );
        assert_eq!(counts.lost_total(), 4);
        assert!(counts.slot(lsm_event_type::LSM_EVENT_TYPES.0).is_none());
        let v = serde_json::to_value(counts).unwrap();
        assert_eq!(v["open"]["delivered"], 11);
        assert_eq!(v["exec"]["events"], 0);
    }
}
