//! The kernel filesystems meshbpf reads besides bpffs: tracefs (tracepoint
//! ids), securityfs (lockdown, LSMs) and cgroup2 (cgroup hooks).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{fstatfs, statfs, CGROUP2_SUPER_MAGIC};

use crate::kernel::ffi;

/// Where tracefs belongs, and where debugfs shows it; libbpf looks in both.
pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const TRACEFS_MAGIC: i64 = 0x7472_6163;

pub const SECURITYFS: &str = "/sys/kernel/security";
const SECURITYFS_MAGIC: i64 = 0x7363_6673;

fn has_magic(path: &Path, magic: i64) -> bool {
    statfs(path)
        .map(|fs| fs.filesystem_type().0 == magic)
        .unwrap_or(false)
}

/// The tracefs that libbpf will use to find tracepoint ids, if one is mounted.
pub fn tracefs() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| has_magic(p, TRACEFS_MAGIC))
}

pub fn mount_tracefs() -> Result<PathBuf> {
    mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs at {TRACEFS}"))?;
    Ok(PathBuf::from(TRACEFS))
}

/// Every mount point of a filesystem type, from /proc/self/mountinfo.
pub fn mount_points(fstype: &str) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|info| parse_mount_points(&info, fstype))
        .unwrap_or_default()
}

fn parse_mount_points(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, after) = line.split_once(" - ")?;
            let mount_point = fields.split(' ').nth(4)?;
            (after.split(' ').next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A directory of a cgroup v2 hierarchy, open, and its cgroup id: the
/// directory's inode number, which is what bpf_get_current_cgroup_id()
/// returns. The error says why `path` is not one.
pub fn open_cgroup2(path: &Path) -> Result<(fs::File, u64), String> {
    let dir = fs::File::open(path).map_err(|e| e.to_string())?;
    let stat = fstatfs(&dir).map_err(|e| e.to_string())?;
    if stat.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err("not a directory of a cgroup v2 hierarchy".into());
    }
    let id = dir.metadata().map_err(|e| e.to_string())?.ino();
    Ok((dir, id))
}

/// The cgroup v2 ids of this process's cgroup and of its ancestors, the
/// root first, as bpf_get_current_ancestor_cgroup_id() numbers them by
/// level; empty where no cgroup2 hierarchy is mounted.
pub fn own_cgroup_ids() -> Vec<u64> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(relative) = own.lines().find_map(|line| line.strip_prefix("0::")) else {
        return Vec::new();
    };
    let Some(mut dir) = mount_points("cgroup2").into_iter().next() else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for component in std::iter::once("").chain(relative.split('/').filter(|c| !c.is_empty())) {
        dir.push(component);
        match fs::metadata(&dir) {
            Ok(meta) => ids.push(meta.ino()),
            Err(_) => return Vec::new(),
        }
    }
    ids
}

/// A file of securityfs, from its mount point or, where it is not mounted,
/// from a mount that is never attached anywhere (so nothing changes for
/// anyone else; needs CAP_SYS_ADMIN).
pub fn read_securityfs(file: &str) -> io::Result<String> {
    if has_magic(Path::new(SECURITYFS), SECURITYFS_MAGIC) {
        return fs::read_to_string(Path::new(SECURITYFS).join(file));
    }
    read_detached("securityfs", file)
}

/// Reads `file` from a fresh, detached mount of `fstype` (fsopen/fsmount).
/// Only for single-instance filesystems without options: a detached mount
/// of those shares the superblock and changes nothing.
fn read_detached(fstype: &str, file: &str) -> io::Result<String> {
    let fstype = CString::new(fstype).map_err(io::Error::other)?;
    let file = CString::new(file).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name; the syscall returns a fresh fd or -1.
    let context = unsafe {
        ffi::os_fd(libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            libc::FSOPEN_CLOEXEC,
        ))
    }?;
    // SAFETY: an fd we own, with no key or value.
    ffi::check_os(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: an fd we own; the syscall returns a fresh fd or -1.
    let mnt = unsafe {
        ffi::os_fd(libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            0,
        ))
    }?;
    // SAFETY: an fd we own and a NUL-terminated name; openat returns a
    // fresh fd or -1.
    let fd = unsafe {
        ffi::os_fd(
            libc::openat(
                mnt.as_raw_fd(),
                file.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
            .into(),
        )
    }?;
    let mut text = String::new();
    fs::File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found_by_type_and_unescaped() {
        let info = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
35 22 0:30 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700
36 22 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
37 22 0:32 / /mnt/with\\040space rw - cgroup2 none rw
";
        assert_eq!(
            parse_mount_points(info, "cgroup2"),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/mnt/with space")
            ]
        );
        assert_eq!(
            parse_mount_points(info, "bpf"),
            vec![PathBuf::from("/sys/fs/bpf")]
        );
        assert!(parse_mount_points(info, "tracefs").is_empty());
    }

    #[test]
    fn own_cgroup_ids_run_from_the_root_to_this_process_cgroup() {
        let root = mount_points("cgroup2").into_iter().next().unwrap();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let relative = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let ids = own_cgroup_ids();
        let depth = relative.split('/').filter(|c| !c.is_empty()).count();
        assert_eq!(ids.len(), 1 + depth);
        assert_eq!(ids[0], fs::metadata(&root).unwrap().ino());
        let leaf = root.join(relative.trim_start_matches('/'));
        assert_eq!(ids[depth], open_cgroup2(&leaf).unwrap().1);
        assert_eq!(
            open_cgroup2(Path::new("/proc")).unwrap_err(),
            "not a directory of a cgroup v2 hierarchy"
        );
    }

    #[test]
    fn unescape_leaves_stray_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9"), "a\\9");
    }
}
