//! tc_classifier's health check: how full its flow table is, and whether
//! it has had to evict.

use anyhow::Result;

use super::FlowTable;
use crate::health::{fullness, Check};
use crate::kernel::pins::AttachmentDir;

pub fn checks(dir: &AttachmentDir, _max_drop_percent: u8) -> Result<Vec<Check>> {
    Ok(vec![flow_table(&super::inspect(dir)?)])
}

/// An LRU table that evicted has been full, even when it reads a little
/// below its size (the kernel keeps per-CPU free lists).
fn flow_table(t: &FlowTable) -> Check {
    const HINT: &str = "detach, then attach again with a larger --max-flows";
    let check = fullness(
        "flow_table",
        "flows",
        t.flows as u64,
        u64::from(t.max_flows),
        "so the least recently used flows are evicted",
        HINT,
    );
    if t.evictions == 0 {
        return check;
    }
    let detail = format!(
        "{}; {} flows evicted since attach: the table has been full",
        check.detail, t.evictions
    );
    Check::warn("flow_table", detail, HINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;

    #[test]
    fn a_flow_table_that_evicted_has_been_full() {
        let table = |flows, evictions| FlowTable {
            program: super::super::PROGRAM,
            method: crate::kernel::tc::TcMethod::Tcx,
            max_flows: 64,
            flows,
            flows_created: flows as u64 + evictions,
            evictions,
            not_ip: 0,
            classes: Vec::new(),
        };
        let roomy = flow_table(&table(10, 0));
        assert_eq!(roomy.status, Status::Ok);
        assert_eq!(roomy.detail, "10 of 64 flows (16%)");
        let evicting = flow_table(&table(55, 144));
        assert_eq!(evicting.status, Status::Warn);
        assert_eq!(
            evicting.detail,
            "55 of 64 flows (86%); 144 flows evicted since attach: the table has been full"
        );
        assert_eq!(flow_table(&table(60, 0)).status, Status::Warn);
    }
}
