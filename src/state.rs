//! What an attachment is right now, read back from its pins and the kernel.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::fd::AsFd;

use crate::kernel::clock;
use crate::kernel::netdev;
use crate::kernel::objinfo;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::xdp::{self, XdpMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// The link runs the pinned program on the interface of that name here.
    Attached,
    /// The link no longer runs: its interface was deleted, or a detach was
    /// interrupted after detaching it.
    Defunct,
    /// The link is live, but not on an interface of that name in this
    /// network namespace (it was attached from another one).
    Elsewhere,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub interface: String,
    pub program: String,
    pub mode: Option<XdpMode>,
    /// RFC 3339; the kernel's load time of the attached program.
    pub attached_at: String,
    pub state: LinkState,
    pub prog_id: u32,
    pub link_id: u32,
    pub pin_path: String,
}

pub fn inspect(dir: &AttachmentDir) -> Result<Attachment> {
    let link_fd = objinfo::open_pinned(&dir.link())?;
    let link = objinfo::link_info(link_fd.as_fd())
        .with_context(|| format!("inspecting {}", dir.link().display()))?;
    let prog = objinfo::prog_info_by_id(link.prog_id)?;
    let (state, mode) = if link.xdp_ifindex == 0 {
        (LinkState::Defunct, None)
    } else if netdev::name_of(link.xdp_ifindex).as_deref() == Some(dir.interface.as_str()) {
        let current = xdp::query(link.xdp_ifindex)?;
        (
            LinkState::Attached,
            current
                .filter(|c| c.prog_id == link.prog_id)
                .and_then(|c| c.mode),
        )
    } else {
        (LinkState::Elsewhere, None)
    };
    Ok(Attachment {
        interface: dir.interface.clone(),
        program: dir.program.clone(),
        mode,
        attached_at: clock::rfc3339(clock::boottime_to_wall(prog.load_time_ns)),
        state,
        prog_id: link.prog_id,
        link_id: link.id,
        pin_path: dir.path.display().to_string(),
    })
}
