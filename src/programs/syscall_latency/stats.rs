//! What syscall_latency reports in `stats`: its element of `stats -j` (the
//! attachment, [`LatencyAttachment`]) and its block of the table.

use super::LatencyAttachment;
use crate::programs::HostReport;

impl HostReport for LatencyAttachment {
    fn render(&self) -> String {
        let a = self;
        format!(
        "host · {} · {} · since {} · progs {}/{} · links {}/{}{}\nper-syscall histograms: meshbpf latency",
        a.program,
        a.method.as_str(),
        a.attached_at,
        a.prog_ids[0],
        a.prog_ids[1],
        a.link_ids[0],
        a.link_ids[1],
        super::describe_filters(a)
        )
    }

    fn prog_ids(&self) -> Vec<u32> {
        self.prog_ids.to_vec()
    }
}
