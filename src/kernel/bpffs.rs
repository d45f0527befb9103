//! Finding, and when allowed mounting, the bpffs that holds meshbpf's pins.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};

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

/// `path` where the kernel will find it: its longest existing prefix
/// canonicalized (symlinks and `..` resolved), the missing rest appended.
/// The missing rest must be plain names: a `..` there, or a dangling
/// symlink, could land anywhere once created, so it is refused.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("resolving the pin root {}", path.display()))?;
    let existing = existing_ancestor(&absolute);
    let mut real = fs::canonicalize(existing)
        .with_context(|| format!("resolving the pin root {}", path.display()))?;
    let missing = absolute.strip_prefix(existing).unwrap_or(Path::new(""));
    for part in missing.components() {
        let Component::Normal(name) = part else {
            return Err(unresolvable(
                path,
                &format!("its missing part {} has a `..`", missing.display()),
            ));
        };
        real.push(name);
        match real.symlink_metadata() {
            Err(_) => {}
            // Made since it was found missing (another command created the
            // root): where it leads now is where the kernel will look.
            Ok(_) if real.exists() => {
                real = fs::canonicalize(&real)
                    .with_context(|| format!("resolving the pin root {}", path.display()))?;
            }
            Ok(_) => {
                return Err(unresolvable(
                    path,
                    &format!("{} is a symlink to nothing", real.display()),
                ))
            }
        }
    }
    Ok(real)
}

fn unresolvable(path: &Path, why: &str) -> anyhow::Error {
    Failure::new(format!(
        "cannot tell where the pin root {} would be: {why}",
        path.display()
    ))
    .hint("pass --bpffs as a path without `..` whose directories exist, or create it first")
    .into()
}

/// Whether `path` (or, if it does not exist yet, where it would be created)
/// lies on a bpffs, once resolved; a path that cannot be resolved does not.
pub fn is_on_bpffs(path: &Path) -> bool {
    resolve(path).is_ok_and(|real| on_bpffs(existing_ancestor(&real)))
}

fn on_bpffs(path: &Path) -> bool {
    statfs(path)
        .map(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// The mount options meshbpf uses and suggests: only root may enter, so no
/// other user can pre-create, rename or lock the pin root.
pub const MOUNT_HINT: &str = "mount -t bpf -o mode=0700 bpf";

/// Makes sure `root` can hold pins. A root that resolves to a directory to
/// be created right under the default mount point gets a bpffs mounted
/// there when this process may mount; any other root is the operator's to
/// mount. Returns the mount point when it mounted one.
pub fn ensure_mounted(root: &Path) -> Result<Option<PathBuf>> {
    let real = resolve(root)?;
    if on_bpffs(existing_ancestor(&real)) {
        return Ok(None);
    }
    let default_mount = fs::canonicalize(DEFAULT_MOUNT).unwrap_or(PathBuf::from(DEFAULT_MOUNT));
    // Mounting over the default mount point only helps a root that will be
    // created on it; for a root elsewhere (a symlink, `..`, another
    // filesystem mounted below it) it would hide every pin on the host.
    if existing_ancestor(&real) != default_mount {
        let resolved = if real != root {
            format!(" (it resolves to {})", real.display())
        } else {
            String::new()
        };
        return Err(Failure::new(format!(
            "pin root {}{resolved} is not on a bpffs, so pins cannot be created there",
            root.display()
        ))
        .hint(format!(
            "mount one first (`{MOUNT_HINT} {}`) or choose a root under {DEFAULT_MOUNT} with --bpffs",
            existing_ancestor(&real).display()
        ))
        .into());
    }
    if !caps::has(caps::Capability::CAP_SYS_ADMIN) {
        return Err(Failure::new(format!("no bpffs is mounted at {DEFAULT_MOUNT}"))
            .hint(format!(
                "mount it as root: `{MOUNT_HINT} {DEFAULT_MOUNT}` (meshbpf does this itself when it runs with CAP_SYS_ADMIN)"
            ))
            .into());
    }
    // Two commands racing here would stack two bpffs instances and hide the
    // first one's pins: serialize on the mount point and look again.
    let dir = File::open(&default_mount)
        .with_context(|| format!("opening {}", default_mount.display()))?;
    let _lock = Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", default_mount.display()))?;
    if on_bpffs(&default_mount) {
        return Ok(None);
    }
    mount(
        Some("bpf"),
        &default_mount,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs at {}", default_mount.display()))?;
    Ok(Some(default_mount))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_resolve_through_symlinks_and_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/a/b")).unwrap(), real.join("a/b"));
        assert_eq!(
            resolve(&real.join("link/../x")).unwrap(),
            real.parent().unwrap().join("x")
        );
        assert!(resolve(&real.join("missing/../../etc")).is_err());
        std::os::unix::fs::symlink("/nonexistent/dir", real.join("dangling")).unwrap();
        assert!(resolve(&real.join("dangling/root")).is_err());
        assert!(!is_on_bpffs(&real.join("a")));
    }
}
