//! The pin tree under the meshbpf root: the only state meshbpf keeps.
//!
//! Layout: `<root>/net/<interface>/<program>/{link,prog,<map>...}`, and
//! `<root>/host/<program>/` for programs not tied to an interface. An
//! attachment exists exactly when its `link` pin does and the link is live:
//! attach pins the link last and detach detaches it first, so a command
//! killed at any point leaves the old attachment or the new one, plus at
//! most a link-less or defunct directory that the next attach or detach of
//! that interface sweeps away.
//!
//! Netlink clsact filters have no link: the `clsact` and `clsact_egress`
//! pins record the programs they run *before* the filters are added, so a
//! filter of meshbpf's can always be found (by handle, priority and program
//! id) and removed; whether they are all there is asked of the kernel
//! (`state::interface` says what commits an interface as a whole).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::error::{errno_of, Failure};
use crate::kernel::{bpffs, bpfobj, netdev, tc};

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/meshbpf";
const NET_DIR: &str = "net";
const HOST_DIR: &str = "host";
const LINK_PIN: &str = "link";
/// Further links of a multi-hook attachment (tc egress) start with this.
const EXTRA_LINK_PREFIX: &str = "link_";
const PROG_PIN: &str = "prog";
/// Marks an attachment made with netlink clsact filters, which have no link
/// object: the ingress program pinned once more under this name.
const CLSACT_PIN: &str = "clsact";
/// The egress program of the same filters, recorded likewise.
const CLSACT_EGRESS_PIN: &str = "clsact_egress";

/// bpffs refuses names with a dot (reserved for its own files), and
/// interface names such as `eth0.100` have them: escape '%' and '.'.
pub fn encode_component(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

pub fn decode_component(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

pub struct StateRoot {
    path: PathBuf,
}

/// Held for the duration of a change; two commands never interleave.
pub struct StateLock {
    _flock: Flock<File>,
}

impl StateRoot {
    pub fn new(path: PathBuf) -> Self {
        StateRoot { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The exclusive lock a change holds; creates the root (0700) if
    /// needed, only ever on a bpffs.
    pub fn lock(&self) -> Result<StateLock> {
        let real = bpffs::resolve(&self.path)?;
        if !bpffs::is_on_bpffs(&real) {
            return Err(Failure::new(format!(
                "pin root {} is not on a bpffs, so meshbpf keeps no state there and creates nothing",
                self.path.display()
            ))
            .hint(format!(
                "pass a --bpffs under {} (or mount one: `{} DIR`)",
                bpffs::DEFAULT_MOUNT,
                bpffs::MOUNT_HINT
            ))
            .into());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&real)
            .with_context(|| format!("creating the pin root {}", self.path.display()))?;
        self.flock(&real, FlockArg::LockExclusive)
    }

    /// The shared lock a reader holds, so it sees the state before or after
    /// a change and never half of it; None when there is no root (no state).
    pub fn lock_shared(&self) -> Result<Option<StateLock>> {
        if !self.path.is_dir() {
            return Ok(None);
        }
        let real = bpffs::resolve(&self.path)?;
        self.flock(&real, FlockArg::LockShared).map(Some)
    }

    /// Locks the root at `real`, its resolved path, once it is known to be
    /// meshbpf's: checked on the very directory locked.
    fn flock(&self, real: &Path, arg: FlockArg) -> Result<StateLock> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(real)
            .with_context(|| format!("opening the pin root {}", self.path.display()))?;
        let meta = dir
            .metadata()
            .with_context(|| format!("reading the owner of {}", self.path.display()))?;
        self.check_trusted(real, &meta, true)?;
        for ancestor in real.ancestors().skip(1) {
            if let Ok(meta) = fs::metadata(ancestor) {
                self.check_trusted(ancestor, &meta, false)?;
            }
        }
        let flock = Flock::lock(dir, arg)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("locking {}", self.path.display()))?;
        Ok(StateLock { _flock: flock })
    }

    /// Another user who owns the root or one of its directories, or may
    /// write into the root (or rename it away: a writable parent without
    /// the sticky bit), could plant pins, hold its lock forever or swap it:
    /// refused rather than trusted.
    fn check_trusted(&self, path: &Path, meta: &fs::Metadata, is_root: bool) -> Result<()> {
        let euid = nix::unistd::geteuid().as_raw();
        let mode = meta.mode();
        let problem = if meta.uid() != 0 && meta.uid() != euid {
            Some(format!("is owned by uid {}", meta.uid()))
        } else if mode & 0o022 != 0 && (is_root || mode & libc::S_ISVTX == 0) {
            Some(format!(
                "is writable by other users (mode {:o})",
                mode & 0o7777
            ))
        } else {
            None
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        let what = if is_root {
            "it".to_owned()
        } else {
            path.display().to_string()
        };
        Err(Failure::new(format!(
            "refusing the pin root {}: {what} {problem}, so another user could plant, rename or lock meshbpf's state",
            self.path.display(),
        ))
        .hint(format!(
            "check and remove what another user made there, then let only root into the bpffs: `chmod 0700 {m}`, and mount it that way at boot (`{} {m}`)",
            bpffs::MOUNT_HINT,
            m = bpffs::DEFAULT_MOUNT
        ))
        .into())
    }

    pub fn attachment(&self, interface: &str, program: &str) -> AttachmentDir {
        AttachmentDir {
            interface: interface.to_string(),
            program: program.to_string(),
            path: self
                .path
                .join(NET_DIR)
                .join(encode_component(interface))
                .join(program),
        }
    }

    /// A host-wide attachment; its `interface` is empty.
    pub fn host_attachment(&self, program: &str) -> AttachmentDir {
        AttachmentDir {
            interface: String::new(),
            program: program.to_string(),
            path: self.path.join(HOST_DIR).join(program),
        }
    }

    /// Every committed attachment (one with a link pin), sorted by interface.
    pub fn attachments(&self) -> Result<Vec<AttachmentDir>> {
        let mut found = self.all_program_dirs()?;
        found.retain(AttachmentDir::is_committed);
        Ok(found)
    }

    /// Every program directory of every interface, committed or left over,
    /// sorted by interface.
    pub fn all_program_dirs(&self) -> Result<Vec<AttachmentDir>> {
        let mut found = Vec::new();
        for interface in self.interfaces()? {
            found.extend(self.program_dirs(&interface)?);
        }
        found.sort_by(|a, b| (&a.interface, &a.program).cmp(&(&b.interface, &b.program)));
        Ok(found)
    }

    /// Every interface with a directory under the root, committed or not.
    pub fn interfaces(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = subdirs(&self.path.join(NET_DIR))?
            .iter()
            .map(|dir| decode_component(&file_name(dir)))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The directory of one interface's attachments.
    pub fn interface_dir(&self, interface: &str) -> PathBuf {
        self.path.join(NET_DIR).join(encode_component(interface))
    }

    /// Every program directory of one interface, committed or left over.
    pub fn program_dirs(&self, interface: &str) -> Result<Vec<AttachmentDir>> {
        let iface_dir = self.interface_dir(interface);
        Ok(subdirs(&iface_dir)?
            .iter()
            .map(|prog_dir| self.attachment(interface, &file_name(prog_dir)))
            .collect())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The directories in `dir`; none when it does not exist.
pub fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

#[derive(Debug, Clone)]
pub struct AttachmentDir {
    pub interface: String,
    pub program: String,
    pub path: PathBuf,
}

impl AttachmentDir {
    pub fn link(&self) -> PathBuf {
        self.path.join(LINK_PIN)
    }

    pub fn prog(&self) -> PathBuf {
        self.path.join(PROG_PIN)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A named pin beside the attachment's own (extra links, programs).
    pub fn pin(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn clsact(&self) -> PathBuf {
        self.path.join(CLSACT_PIN)
    }

    pub fn clsact_egress(&self) -> PathBuf {
        self.path.join(CLSACT_EGRESS_PIN)
    }

    /// Another program's directory on the same interface.
    pub fn sibling(&self, program: &str) -> AttachmentDir {
        let parent = self.path.parent().unwrap_or(&self.path);
        AttachmentDir {
            interface: self.interface.clone(),
            program: program.to_string(),
            path: parent.join(program),
        }
    }

    pub fn is_committed(&self) -> bool {
        self.link().exists() || self.clsact().exists()
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.path).with_context(|| format!("creating {}", self.path.display()))
    }

    /// Removes the attachment: detaches its links (or clsact filters)
    /// first, then removes every pin.
    pub fn remove(&self) -> Result<()> {
        // Links without a detach operation (raw tracepoints) go with their
        // last reference: held here, closed once the pins are gone, so they
        // are released now rather than from the kernel's work queue.
        let mut undetachable = Vec::new();
        for entry in
            fs::read_dir(&self.path).with_context(|| format!("listing {}", self.path.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name == LINK_PIN || name.starts_with(EXTRA_LINK_PREFIX) {
                let link = bpfobj::open_pinned(&self.pin(&name))?;
                match bpfobj::detach_link(link.as_fd()) {
                    Err(err) if errno_of(&err) == Some(libc::EOPNOTSUPP) => undetachable.push(link),
                    other => other?,
                }
            }
        }
        if self.clsact().exists() {
            // Filters outlive their interface only as long as it exists.
            if let Ok(iface) = netdev::resolve(&self.interface) {
                let ingress = bpfobj::open_pinned(&self.clsact())?;
                let egress = match self.clsact_egress().exists() {
                    true => Some(bpfobj::open_pinned(&self.clsact_egress())?),
                    false => None,
                };
                tc::detach_netlink(&iface, ingress.as_fd(), egress.as_ref().map(|e| e.as_fd()))?;
            }
        }
        self.unpin()?;
        drop(undetachable);
        Ok(())
    }

    /// Removes every pin and the directories left empty, leaving the link
    /// running if another pin holds it: the link pin goes first, the
    /// program and maps after.
    pub fn unpin(&self) -> Result<()> {
        remove_pin(&self.link())?;
        remove_pin(&self.clsact())?;
        remove_pin(&self.clsact_egress())?;
        for entry in
            fs::read_dir(&self.path).with_context(|| format!("listing {}", self.path.display()))?
        {
            remove_pin(&entry?.path())?;
        }
        fs::remove_dir(&self.path).with_context(|| format!("removing {}", self.path.display()))?;
        if let Some(parent) = self.path.parent() {
            // Other programs may still be attached to this interface.
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing pin {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_round_trip_and_never_contain_dots() {
        for name in ["eth0", "eth0.100", "a%2Eb", "%", "v.l.a.n"] {
            let encoded = encode_component(name);
            assert!(!encoded.contains('.'), "{encoded}");
            assert_eq!(decode_component(&encoded), name);
        }
    }

    #[test]
    fn attachment_paths_follow_the_layout() {
        let root = StateRoot::new(PathBuf::from("/sys/fs/bpf/meshbpf"));
        let dir = root.attachment("eth0.7", "xdp_counter");
        assert_eq!(
            dir.path,
            Path::new("/sys/fs/bpf/meshbpf/net/eth0%2E7/xdp_counter")
        );
        assert_eq!(
            dir.link(),
            Path::new("/sys/fs/bpf/meshbpf/net/eth0%2E7/xdp_counter/link")
        );
        assert_eq!(
            dir.map("counters"),
            Path::new("/sys/fs/bpf/meshbpf/net/eth0%2E7/xdp_counter/counters")
        );
    }

    #[test]
    fn a_missing_root_has_no_attachments() {
        let root = StateRoot::new(PathBuf::from("/nonexistent/meshbpf"));
        assert!(root.attachments().unwrap().is_empty());
    }
}
