//! Whether a capture runs on an interface, and the lock that makes it the
//! only one: an exclusive flock on the interface's pin directory, held
//! while the capture runs and dropped by the kernel with the process
//! however it ends. So whoever gets the lock knows that a selection still
//! switched on is stale (a killed capture's) and may replace it. The lock
//! is the interface's, not a program's, because a capture outlives a swap
//! of the program.

use std::fs::File;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{capture_selection, CaptureMaps};
use crate::error::Failure;
use crate::health::{Check, Fix};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::programs::maps::{bytes, lookup};
use crate::programs::XDP_PROGRAMS;

/// Whether a capture runs on an attachment, as `health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Off,
    Running {
        pid: u32,
    },
    /// Switched on by a process that is gone (killed outright): packets
    /// are still selected and copied into a ring buffer nobody reads.
    Stale {
        pid: u32,
    },
    /// Attached by a meshbpf without `capture`.
    NoMaps,
}

/// The capture state, from the selection and whether its owner lives;
/// takes no lock, so a capture starting meanwhile is never refused.
pub fn state(dir: &AttachmentDir) -> Result<State> {
    let Ok(maps) = CaptureMaps::open(dir) else {
        return Ok(State::NoMaps);
    };
    let control: Option<capture_selection> = lookup(&maps.control, &0u32.to_ne_bytes())?;
    Ok(match control {
        Some(c) if c.enabled != 0 => {
            let pid = c.owner_pid;
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                .is_ok_and(|()| pid != 0);
            if alive {
                State::Running { pid }
            } else {
                State::Stale { pid }
            }
        }
        _ => State::Off,
    })
}

/// The health check of an XDP attachment's capture: one left switched on
/// by a killed `meshbpf capture` costs every packet a copy nobody reads.
pub fn check(dir: &AttachmentDir) -> Result<Check> {
    const NAME: &str = "capture";
    Ok(match state(dir)? {
        State::Off => Check::ok(NAME, "no capture runs"),
        State::Running { pid } => Check::ok(NAME, format!("a capture runs (pid {pid})")),
        State::NoMaps => Check::ok(
            NAME,
            format!(
                "attached by a meshbpf without capture: re-attach {} to capture",
                dir.program
            ),
        ),
        State::Stale { pid } => Check::warn(
            NAME,
            format!(
                "a capture of pid {pid}, which no longer runs, is still switched on: every packet it selects is copied for nobody"
            ),
            "meshbpf health --fix switches it off, and so does the next capture on this interface",
        ),
    })
}

/// `health --fix`: switches off the captures left on by killed processes,
/// each under its interface's capture lock, so a capture that runs is
/// never touched.
pub fn fix_stale(root: &StateRoot) -> Result<Vec<Fix>> {
    let mut fixes = Vec::new();
    for dir in root.attachments()? {
        if !XDP_PROGRAMS.contains(&dir.program.as_str()) {
            continue;
        }
        if let Some(pid) = clear_stale(&dir).transpose() {
            fixes.push(Fix::of(
                "stop_stale_capture",
                pid.map(|pid| {
                    format!("switched off the capture of pid {pid} on {}", dir.interface)
                }),
            ));
        }
    }
    Ok(fixes)
}

/// The owner's pid when there was a stale selection to clear.
fn clear_stale(dir: &AttachmentDir) -> Result<Option<u32>> {
    let Ok(_lock) = lock_interface(dir) else {
        return Ok(None);
    };
    let maps = CaptureMaps::open(dir)?;
    let control: Option<capture_selection> = lookup(&maps.control, &0u32.to_ne_bytes())?;
    match control {
        Some(c) if c.enabled != 0 => {
            maps.control.update(
                &0u32.to_ne_bytes(),
                bytes(&capture_selection::default()),
                MapFlags::ANY,
            )?;
            Ok(Some(c.owner_pid))
        }
        _ => Ok(None),
    }
}

/// The capture lock of `dir`'s interface. bpffs refuses open() on a ring
/// buffer's pin, so it is taken on the directory.
pub fn lock_interface(dir: &AttachmentDir) -> Result<Flock<File>> {
    let path = dir.path.parent().unwrap_or(&dir.path);
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(Failure::new(format!(
            "another `meshbpf capture` runs on {} ({}): one capture at a time per interface",
            dir.interface,
            path.display()
        ))
        .hint(format!(
            "stop the other capture first (fuser -v {} names it)",
            path.display()
        ))
        .into()),
        Err((_, errno)) => {
            Err(anyhow::Error::from(errno).context(format!("locking {}", path.display())))
        }
    }
}
