//! lsm_monitor's metric families: events by type, verdicts and lost events.

use crate::metrics::{label, Family, Kind, Scrape, Value};

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let stats = scrape.stats;
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
    if let Some(s) = &stats.lsm {
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
    vec![events, verdicts, lost]
}
