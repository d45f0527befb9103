//! Programs, maps and links by fd: what the kernel says about them, pinning
//! and opening pins, and link operations.

use std::ffi::{CStr, CString};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

/// libbpf's low-level calls return -errno on failure.
fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[derive(Debug, Clone)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
    /// BPF_PROG_TYPE_*.
    pub prog_type: u32,
    /// CLOCK_BOOTTIME ns at load.
    pub load_time_ns: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// For XDP links: the interface, or 0 once it is gone.
    pub xdp_ifindex: u32,
}

pub fn prog_info(fd: BorrowedFd<'_>) -> Result<ProgInfo> {
    // SAFETY: bpf_prog_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of_val(&info) as u32;
    check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })
        .context("reading program info")?;
    // SAFETY: the kernel NUL-terminates names within the 16-byte array.
    let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(ProgInfo {
        id: info.id,
        name,
        prog_type: info.type_,
        load_time_ns: info.load_time,
    })
}

pub fn prog_info_by_id(id: u32) -> Result<ProgInfo> {
    let fd = check(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) })
        .with_context(|| format!("opening program id {id}"))?;
    // SAFETY: a fresh fd that we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    prog_info(std::os::fd::AsFd::as_fd(&fd))
}

pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo> {
    // SAFETY: as for prog_info.
    let mut info: libbpf_sys::bpf_link_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of_val(&info) as u32;
    check(unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })
        .context("reading link info")?;
    let xdp_ifindex = if info.type_ == libbpf_sys::BPF_LINK_TYPE_XDP {
        // SAFETY: the union member matches the link type checked above.
        unsafe { info.__bindgen_anon_1.xdp.ifindex }
    } else {
        0
    };
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        xdp_ifindex,
    })
}

/// Detaches a link from its hook now. Dropping the last reference (fd or
/// pin) also detaches it, but the kernel does that later, from a work queue.
pub fn detach_link(fd: BorrowedFd<'_>) -> Result<()> {
    check(unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) }).context("detaching link")?;
    Ok(())
}

/// Swaps the program a link runs, atomically: packets see the old program or
/// the new one. `expected` guards against a concurrent swap.
pub fn update_link(
    link: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
    expected: BorrowedFd<'_>,
) -> Result<()> {
    // SAFETY: plain data; sz tells libbpf which fields we know.
    let mut opts: libbpf_sys::bpf_link_update_opts = unsafe { mem::zeroed() };
    opts.sz = mem::size_of_val(&opts) as _;
    opts.flags = libbpf_sys::BPF_F_REPLACE;
    opts.old_prog_fd = expected.as_raw_fd() as u32;
    check(unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), program.as_raw_fd(), &opts) })
        .context("swapping the program of a link")?;
    Ok(())
}

pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = c_path(path)?;
    check(unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) })
        .with_context(|| format!("pinning at {}", path.display()))?;
    Ok(())
}

pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    let c = c_path(path)?;
    let fd = check(unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) })
        .with_context(|| format!("opening pin {}", path.display()))?;
    // SAFETY: a fresh fd that we own from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
