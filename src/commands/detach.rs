//! `meshbpf detach IFACE`: remove every meshbpf attachment and pin of an
//! interface, leaving other tools' programs alone.

use anyhow::Result;
use serde::Serialize;

use crate::kernel::pins::StateRoot;
use crate::kernel::{bpffs, bpfobj, caps, netdev, xdp};
use crate::output::{Output, Report};
use crate::state;

#[derive(Debug, Serialize)]
struct Detached {
    program: String,
    prog_id: Option<u32>,
    link_id: Option<u32>,
}

#[derive(Debug, Serialize)]
struct DetachReport {
    interface: String,
    /// What was removed; empty when nothing of meshbpf's was there.
    detached: Vec<Detached>,
    /// An XDP program of another tool that was seen and left in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign_xdp_prog: Option<ForeignProg>,
}

#[derive(Debug, Serialize)]
struct ForeignProg {
    id: u32,
    name: String,
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
    // Without a bpffs under the root there can be no pins to remove.
    let lock = if bpffs::is_on_bpffs(root.path()) {
        Some(root.lock()?)
    } else {
        None
    };
    let dirs = match lock {
        Some(_) => root.program_dirs(interface)?,
        None => Vec::new(),
    };
    let iface = match netdev::resolve(interface) {
        Ok(iface) => Some(iface),
        Err(err) if dirs.is_empty() => return Err(err),
        // Pins outlive their interface; removing them is what detach is for.
        Err(_) => None,
    };

    let mut detached = Vec::new();
    for dir in &dirs {
        let before = if dir.is_committed() {
            state::inspect(dir).ok()
        } else {
            None
        };
        dir.remove()?;
        detached.push(Detached {
            program: dir.program.clone(),
            prog_id: before.as_ref().map(|a| a.prog_id),
            link_id: before.as_ref().map(|a| a.link_id),
        });
    }

    let foreign_xdp_prog = match iface {
        Some(iface) => xdp::query(iface.index)?.map(|current| ForeignProg {
            id: current.prog_id,
            name: bpfobj::prog_info_by_id(current.prog_id)
                .map(|p| p.name)
                .unwrap_or_default(),
        }),
        None => None,
    };
    out.emit(&DetachReport {
        interface: interface.to_string(),
        detached,
        foreign_xdp_prog,
    })?;
    Ok(())
}
