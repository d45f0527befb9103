//! Finding an interface's xdp_mesh_filter for the filter commands: the
//! attachment a change works on, and the one the kernel runs, which a
//! reader reports.

use anyhow::Result;

use crate::error::Failure;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::programs::xdp_mesh_filter;

/// The filter attachment of an interface, or an error saying how to get one.
pub fn filter_dir(root: &StateRoot, interface: &str) -> Result<AttachmentDir> {
    let dir = root.attachment(interface, xdp_mesh_filter::PROGRAM);
    if !dir.is_committed() {
        return Err(
            Failure::new(format!("xdp_mesh_filter is not attached to {interface}"))
                .hint(format!(
                    "attach it with: meshbpf attach {interface} --filter RULES.json"
                ))
                .into(),
        );
    }
    Ok(dir)
}

/// The filter the kernel runs on an interface, whichever directory pins
/// its link: a reader reports the kernel's program, not the pins' layout.
pub fn running_filter(root: &StateRoot, interface: &str) -> Result<AttachmentDir> {
    let Some(link_dir) = super::xdp_attachment(root, interface)? else {
        return filter_dir(root, interface);
    };
    let attachment = super::inspect(&link_dir)?;
    if attachment.program == xdp_mesh_filter::PROGRAM {
        if let Some(interrupted) = &attachment.interrupted {
            log::warn!("{interrupted}; meshbpf health --fix finishes it");
        }
        return Ok(link_dir.sibling(xdp_mesh_filter::PROGRAM));
    }
    let failure = Failure::new(format!(
        "xdp_mesh_filter is not running on {interface}: the kernel runs {} (program {})",
        attachment.program, attachment.prog_id
    ));
    Err(match attachment.interrupted {
        Some(interrupted) => failure.hint(format!("{interrupted}; run meshbpf health --fix")),
        None => failure.hint(format!(
            "attach it with: meshbpf attach {interface} --filter RULES.json"
        )),
    }
    .into())
}
