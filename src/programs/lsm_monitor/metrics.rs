//! lsm_monitor's metric families: events by type, verdicts and lost events.

use anyhow::Result;

use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, Family, Kind, Value};

pub fn families(dirs: &[AttachmentDir]) -> Result<Vec<Family>> {
    let mut events = Family::new(
        "meshbpf_lsm_events",
        Kind::Counter,
        "Security events lsm_monitor counted, by type",
    );
    let mut verdicts = Family::new(
        "meshbpf_lsm_verdicts",
        Kind::Counter,
        "Events lsm_monitor denied (enforce) or would have denied (audit)",
    );
    let mut lost = Family::new(
        "meshbpf_lsm_lost_events",
        Kind::Counter,
        "Events lost because the ring buffer was full",
    );
    for dir in dirs {
        let s = super::stats(dir)?;
        for (kind, c) in s.events.by_type() {
            events.add(vec![label("type", kind)], Value::Int(c.events));
            for (verdict, n) in [("denied", c.denied), ("audited", c.audited)] {
                verdicts.add(
                    vec![label("type", kind), label("verdict", verdict)],
                    Value::Int(n),
                );
            }
            lost.add(vec![label("type", kind)], Value::Int(c.lost));
        }
    }
    Ok(vec![events, verdicts, lost])
}
