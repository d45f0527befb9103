//! What lsm_monitor reports in `stats`: its element of `stats -j`
//! ([`LsmStats`]: the attachment and its event counters) and its block of
//! the table.

use super::LsmStats;
use crate::output;
use crate::programs::HostReport;

impl HostReport for LsmStats {
    fn render(&self) -> String {
        let s = self;
        let a = &s.attachment;
        let mut table = output::table(&[
            "type",
            "events",
            "delivered",
            "lost",
            "denied",
            "audited",
            "suppressed",
        ]);
        for (name, c) in s.events.by_type() {
            table.add_row(vec![
                name.into(),
                output::right(output::count(c.events)),
                output::right(output::count(c.delivered)),
                output::right(output::count(c.lost)),
                output::right(output::count(c.denied)),
                output::right(output::count(c.audited)),
                output::right(output::count(c.suppressed)),
            ]);
        }
        format!(
        "host · {} · {} · {} mode · since {} · progs {} · links {}\n{}\n{table}\nlost in all: {}; events themselves: meshbpf events",
        a.program,
        a.method.as_str(),
        a.mode.as_str(),
        a.attached_at,
        join_ids(&a.prog_ids),
        join_ids(&a.link_ids),
        super::describe_policy(&a.policy),
        output::count(s.lost_total)
    )
    }

    fn prog_ids(&self) -> Vec<u32> {
        self.attachment.prog_ids.clone()
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join("/")
}
