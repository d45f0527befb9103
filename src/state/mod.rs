//! Attachments: what one is right now, read back from its pins and the
//! kernel, and the moves between programs that keep an interface attached.
//!
//! # Swaps (xdp_counter ⇄ xdp_mesh_filter)
//!
//! Invariant: an interface's XDP link is pinned exactly once, as `link` in
//! the directory of a program, and at rest that is the program the link
//! runs. A swap from `from` to `to` keeps the link (packets never see the
//! interface without a program) and takes four steps:
//!
//! | step | a kill after it leaves | the next command and `health --fix` |
//! |---|---|---|
//! | 1. install: load `to`, pin its program and maps | `to` uncommitted, `from` runs | sweep `to` (roll back); `health` names the leftover pins |
//! | 2. `BPF_LINK_UPDATE` `from`'s link to `to`'s program: **the commit** | `from/link` runs `to` | rename the pin to `to/link`, unpin `from` (roll forward); `health` says "interrupted swap of `from` → `to`" |
//! | 3. rename `from/link` to `to/link` (one syscall) | `from` uncommitted, `to` runs | sweep `from`'s pins |
//! | 4. unpin `from` | the new state | |
//!
//! Before the commit the old state stands, after it the new one; only the
//! window between 2 and 3 has a link pinned beside another program, and
//! [`inspect`] reports what the kernel runs there, never what the pin's
//! directory says. A link that runs a program no directory holds (its
//! target's pins were removed by hand) is swapped back to its own directory's
//! program. `interface::reconcile` settles all of these, under the
//! exclusive lock, before every change of an interface and in `health --fix`.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::fd::AsFd;

use crate::kernel::bpfobj;
use crate::kernel::clock;
use crate::kernel::netdev;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::xdp::{self, XdpMode};
use crate::programs;

pub mod filter;
pub mod host;
pub mod interface;
pub mod saved_rules;

pub use crate::kernel::links::LinkState;

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub interface: String,
    /// The program the kernel runs, whichever directory pins its link.
    pub program: String,
    pub mode: Option<XdpMode>,
    /// RFC 3339; the kernel's load time of the attached program.
    pub attached_at: String,
    pub state: LinkState,
    pub prog_id: u32,
    pub link_id: u32,
    pub pin_path: String,
    /// Set when the pins disagree with the kernel: what an interrupted
    /// command left, and how to finish it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
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
    let (program, interrupted) = match runs(dir, link.prog_id) {
        Runs::Own => (dir.program.clone(), None),
        Runs::Sibling(owner) => (
            owner.program.clone(),
            Some(unfinished_swap(dir, &owner, link.prog_id)),
        ),
        Runs::Unpinned => (prog.name.clone(), Some(stranded_swap(dir, link.prog_id))),
    };
    Ok(Attachment {
        interface: dir.interface.clone(),
        program,
        mode,
        attached_at: clock::rfc3339(clock::boottime_to_wall(prog.load_time_ns)),
        state,
        prog_id: link.prog_id,
        link_id: link.id,
        pin_path: dir.path.display().to_string(),
        interrupted,
    })
}

/// Which directory holds the program a link pinned in `dir` runs.
pub enum Runs {
    Own,
    /// Another XDP program's directory on the interface: a swap stopped
    /// between its commit and the move of the pin.
    Sibling(AttachmentDir),
    /// None: the swap's target was unpinned.
    Unpinned,
}

pub fn runs(dir: &AttachmentDir, running: u32) -> Runs {
    if pinned_prog_id(dir) == Some(running)
        || !programs::XDP_PROGRAMS.contains(&dir.program.as_str())
    {
        return Runs::Own;
    }
    programs::XDP_PROGRAMS
        .iter()
        .map(|p| dir.sibling(p))
        .find(|s| s.path != dir.path && pinned_prog_id(s) == Some(running))
        .map_or(Runs::Unpinned, Runs::Sibling)
}

pub fn unfinished_swap(from: &AttachmentDir, to: &AttachmentDir, prog_id: u32) -> String {
    format!(
        "interrupted swap of {} → {} on {}: the kernel runs {} (program {prog_id}), its link is still pinned with {}",
        from.program, to.program, from.interface, to.program, from.program
    )
}

pub fn stranded_swap(dir: &AttachmentDir, prog_id: u32) -> String {
    format!(
        "interrupted swap on {}: the link pinned with {} runs program {prog_id}, which no pin of meshbpf's holds",
        dir.interface, dir.program
    )
}

/// Moves a committed attachment to the program pinned in `to`, atomically:
/// the link swaps programs in the kernel, then its pin is renamed into
/// `to` (steps 2 to 4 above).
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
    finish_move(from, to)
}

/// Steps 3 and 4: the link pin follows the program it runs.
pub fn finish_move(from: &AttachmentDir, to: &AttachmentDir) -> Result<()> {
    if to.link().exists() {
        // Two pins of one link (left by an older meshbpf): drop the stale one.
        std::fs::remove_file(from.link())
    } else {
        std::fs::rename(from.link(), to.link())
    }
    .with_context(|| {
        format!(
            "moving the link pin {} to {}",
            from.link().display(),
            to.link().display()
        )
    })?;
    from.unpin()
}

/// Swaps a link whose program no pin holds back to the program pinned
/// beside it.
pub fn restore_link(dir: &AttachmentDir, running: u32) -> Result<()> {
    let link = bpfobj::open_pinned(&dir.link())?;
    let own = bpfobj::open_pinned(&dir.prog())?;
    let stray = bpfobj::prog_by_id(running)?;
    bpfobj::update_link(link.as_fd(), own.as_fd(), stray.as_fd())
        .with_context(|| format!("swapping {} back onto {}", dir.program, dir.interface))
}

/// The id of the program pinned in a directory.
pub fn pinned_prog_id(dir: &AttachmentDir) -> Option<u32> {
    let fd = bpfobj::open_pinned(&dir.prog()).ok()?;
    bpfobj::prog_info(fd.as_fd()).ok().map(|p| p.id)
}

/// meshbpf's XDP attachment on an interface, whichever program it runs:
/// the directory that pins its link.
pub fn xdp_attachment(root: &StateRoot, interface: &str) -> Result<Option<AttachmentDir>> {
    Ok(root
        .program_dirs(interface)?
        .into_iter()
        .find(|d| d.link().exists() && programs::XDP_PROGRAMS.contains(&d.program.as_str())))
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
    // Before the commit, `to` is swept; after it, the next command finishes.
    if moved.is_err() && to.exists() && !to.is_committed() && !running_in(from, to) {
        to.unpin()?;
    }
    moved
}

/// Whether `from`'s link already runs the program pinned in `to`.
fn running_in(from: &AttachmentDir, to: &AttachmentDir) -> bool {
    let running = bpfobj::open_pinned(&from.link())
        .and_then(|l| bpfobj::link_info(l.as_fd()))
        .map(|l| l.prog_id);
    matches!((running, pinned_prog_id(to)), (Ok(r), Some(p)) if r == p)
}
