//! Attachments: what one is right now, read back from its pins and the
//! kernel, and the moves between programs that keep an interface attached.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::fd::AsFd;

use crate::kernel::bpfobj;
use crate::kernel::clock;
use crate::kernel::netdev;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::xdp::{self, XdpMode};
use crate::programs;

pub mod host;
pub mod interface;

pub use crate::kernel::links::LinkState;

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
    let link_fd = bpfobj::open_pinned(&dir.link())?;
    let link = bpfobj::link_info(link_fd.as_fd())
        .with_context(|| format!("inspecting {}", dir.link().display()))?;
    let prog = bpfobj::prog_info_by_id(link.prog_id)?;
    let (state, mode) = if link.ifindex == 0 {
        (LinkState::Defunct, None)
    } else if netdev::name_of(link.ifindex).as_deref() == Some(dir.interface.as_str()) {
        let current = xdp::query(link.ifindex)?;
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

/// Moves a committed attachment to the program pinned in `to`, atomically:
/// the link swaps programs in the kernel, then its pin moves to `to`.
/// Killed in between, the link pin still sits in `from` while running `to`'s
/// program; [`reconcile`] finishes the move.
pub fn move_link(from: &AttachmentDir, to: &AttachmentDir) -> Result<()> {
    let link = bpfobj::open_pinned(&from.link())?;
    let old = bpfobj::open_pinned(&from.prog())?;
    let new = bpfobj::open_pinned(&to.prog())?;
    bpfobj::update_link(link.as_fd(), new.as_fd(), old.as_fd()).with_context(|| {
        format!(
            "swapping {} for {} on {}",
            from.program, to.program, from.interface
        )
    })?;
    bpfobj::pin(link.as_fd(), &to.link())?;
    from.unpin()
}

/// The id of the program pinned in a directory.
fn pinned_prog_id(dir: &AttachmentDir) -> Option<u32> {
    let fd = bpfobj::open_pinned(&dir.prog()).ok()?;
    bpfobj::prog_info(fd.as_fd()).ok().map(|p| p.id)
}

/// Finishes what an interrupted command left on an interface: a link pin
/// belongs with the program the link runs, so a link pinned beside another
/// program is re-pinned beside its own and the stale directory unpinned;
/// directories without a link are swept. Run under the exclusive lock.
pub fn reconcile(dirs: &[AttachmentDir]) -> Result<()> {
    for dir in dirs.iter().filter(|d| d.link().exists()) {
        let link_fd = bpfobj::open_pinned(&dir.link())?;
        let running = bpfobj::link_info(link_fd.as_fd())?.prog_id;
        if pinned_prog_id(dir) == Some(running) {
            continue;
        }
        if let Some(owner) = dirs
            .iter()
            .find(|d| d.path != dir.path && pinned_prog_id(d) == Some(running))
        {
            if !owner.is_committed() {
                bpfobj::pin(link_fd.as_fd(), &owner.link())?;
            }
            log::info!(
                "finishing an interrupted swap: {} runs {}",
                dir.interface,
                owner.program
            );
            dir.unpin()?;
        }
    }
    for dir in dirs.iter().filter(|d| d.exists() && !d.is_committed()) {
        dir.unpin()?;
    }
    Ok(())
}

/// meshbpf's XDP attachment on an interface, whichever program it runs.
pub fn xdp_attachment(root: &StateRoot, interface: &str) -> Result<Option<AttachmentDir>> {
    Ok(root
        .program_dirs(interface)?
        .into_iter()
        .find(|d| d.is_committed() && programs::XDP_PROGRAMS.contains(&d.program.as_str())))
}

/// Replaces the program of a committed attachment: `install` loads and pins
/// the new program (and its maps) into `to`, then the link moves over.
/// Whatever fails, `from` keeps running.
pub fn swap(
    from: &AttachmentDir,
    to: &AttachmentDir,
    install: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let moved = install().and_then(|()| move_link(from, to));
    if moved.is_err() && to.exists() && !to.is_committed() {
        to.unpin()?;
    }
    moved
}
