//! tracefs, where tracepoints have their ids: found, or mounted when
//! missing (it is not mounted on a fresh machine), like bpffs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::statfs;

use crate::error::Failure;
use crate::kernel::caps;

pub const MOUNT: &str = "/sys/kernel/tracing";
/// Where older setups reach tracefs, through debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const TRACEFS_MAGIC: i64 = 0x7472_6163;

fn is_tracefs(path: &Path) -> bool {
    statfs(path)
        .map(|fs| fs.filesystem_type().0 == TRACEFS_MAGIC)
        .unwrap_or(false)
}

/// The tracefs to use, mounting one at /sys/kernel/tracing when none is
/// there; the bool says whether this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool)> {
    for path in [MOUNT, DEBUGFS_TRACING] {
        if is_tracefs(Path::new(path)) {
            return Ok((PathBuf::from(path), false));
        }
    }
    if !caps::has(caps::Capability::CAP_SYS_ADMIN) {
        return Err(Failure::new(format!(
            "no tracefs is mounted at {MOUNT}, and tracepoint ids live there"
        ))
        .hint(format!(
            "mount it as root: `mount -t tracefs tracefs {MOUNT}` (meshbpf does this itself with CAP_SYS_ADMIN)"
        ))
        .into());
    }
    mount(
        Some("tracefs"),
        MOUNT,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs at {MOUNT}"))?;
    Ok((PathBuf::from(MOUNT), true))
}

/// The id of tracepoint `category/name`, for perf_event_open.
pub fn tracepoint_id(tracefs: &Path, category: &str, name: &str) -> Result<u64> {
    let file = tracefs.join("events").join(category).join(name).join("id");
    let text = fs::read_to_string(&file).map_err(|e| {
        let failure = Failure::new(format!(
            "the kernel has no tracepoint {category}/{name} ({}: {e})",
            file.display()
        ));
        anyhow::Error::new(failure.hint(format!(
            "list the tracepoints with `ls {}/events/{category}`, or fix the program's SEC(\"tp/...\") name",
            tracefs.display()
        )))
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("reading the tracepoint id in {}", file.display()))
}
