//! Finding, and when allowed mounting, the bpffs that holds meshbpf's pins.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::statfs;

use crate::error::Failure;
use crate::kernel::caps;

pub const DEFAULT_MOUNT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// Whether `path` (or, if it does not exist yet, where it would be created)
/// lies on a bpffs.
pub fn is_on_bpffs(path: &Path) -> bool {
    statfs(existing_ancestor(path))
        .map(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Makes sure `root` can hold pins. A root under the default mount point gets
/// a bpffs mounted there when this process may mount; any other root is the
/// operator's to mount. Returns the mount point when it mounted one.
pub fn ensure_mounted(root: &Path) -> Result<Option<PathBuf>> {
    if is_on_bpffs(root) {
        return Ok(None);
    }
    let default_mount = Path::new(DEFAULT_MOUNT);
    if !root.starts_with(default_mount) {
        return Err(Failure::new(format!(
            "pin root {} is not on a bpffs, so pins cannot be created there",
            root.display()
        ))
        .hint(format!(
            "mount one first (`mount -t bpf bpf {}`) or choose a root under {DEFAULT_MOUNT} with --bpffs",
            existing_ancestor(root).display()
        ))
        .into());
    }
    if !caps::has(caps::Capability::CAP_SYS_ADMIN) {
        return Err(Failure::new(format!("no bpffs is mounted at {DEFAULT_MOUNT}"))
            .hint(format!(
                "mount it as root: `mount -t bpf bpf {DEFAULT_MOUNT}` (meshbpf does this itself when it runs with CAP_SYS_ADMIN)"
            ))
            .into());
    }
    // Two commands racing here would stack two bpffs instances and hide the
    // first one's pins: serialize on the mount point and look again.
    let dir = File::open(default_mount).with_context(|| format!("opening {DEFAULT_MOUNT}"))?;
    let _lock = Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {DEFAULT_MOUNT}"))?;
    if is_on_bpffs(root) {
        return Ok(None);
    }
    mount(
        Some("bpf"),
        default_mount,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs at {DEFAULT_MOUNT}"))?;
    Ok(Some(default_mount.to_path_buf()))
}
