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
        return Ok(running_dir(&link_dir, &attachment));
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

/// The meshbpf XDP program the kernel runs on an interface (xdp_counter
/// or xdp_mesh_filter), or None.
pub fn running_xdp(root: &StateRoot, interface: &str) -> Result<Option<AttachmentDir>> {
    let Some(link_dir) = super::xdp_attachment(root, interface)? else {
        return Ok(None);
    };
    let attachment = super::inspect(&link_dir)?;
    Ok(Some(running_dir(&link_dir, &attachment)))
}

/// The directory of the program `link_dir`'s link runs, which is another
/// one's after an interrupted swap.
fn running_dir(link_dir: &AttachmentDir, attachment: &super::Attachment) -> AttachmentDir {
    if let Some(interrupted) = &attachment.interrupted {
        log::warn!("{interrupted}; meshbpf health --fix finishes it");
    }
    link_dir.sibling(&attachment.program)
}
