//! `meshbpf detach IFACE`: remove every meshbpf attachment and pin of an
//! interface, leaving other tools' programs alone.

use anyhow::Result;
use serde::Serialize;

use crate::kernel::pins::StateRoot;
use crate::kernel::{caps, netdev};
use crate::output::{Output, Report};
use crate::state::interface::{self, ForeignProg, Removed};

#[derive(Debug, Serialize)]
struct DetachReport {
    interface: String,
    /// What was removed; empty when nothing of meshbpf's was there.
    detached: Vec<Removed>,
    /// An XDP program of another tool that was seen and left in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign_xdp_prog: Option<ForeignProg>,
}

impl Report for DetachReport {
    fn render(&self) -> String {
        let mut lines: Vec<String> = self
            .detached
            .iter()
            .map(|d| match (d.prog_id, d.link_id) {
                (Some(p), Some(l)) => format!(
                    "detached {} from {} (prog id {p}, link id {l})",
                    d.program, self.interface
                ),
                _ => format!(
                    "removed leftover pins of {} on {}",
                    d.program, self.interface
                ),
            })
            .collect();
        if self.detached.is_empty() {
            lines.push(format!(
                "nothing of meshbpf's is attached to {}",
                self.interface
            ));
        }
        if let Some(prog) = &self.foreign_xdp_prog {
            lines.push(format!(
                "left XDP program id {} ('{}') on {} alone: meshbpf did not attach it",
                prog.id, prog.name, self.interface
            ));
        }
        lines.join("\n")
    }
}

pub fn run(root: &StateRoot, out: &Output, interface: &str) -> Result<()> {
    netdev::validate_name(interface)?;
    caps::require("detach", &[caps::BPF, caps::NET_ADMIN])?;
    let done = interface::detach(root, interface)?;
    out.emit(&DetachReport {
        interface: interface.to_string(),
        detached: done.removed,
        foreign_xdp_prog: done.foreign_xdp_prog,
    })?;
    Ok(())
}
