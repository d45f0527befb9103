//! Programs, maps and links by fd: what the kernel says about them, pinning
//! and opening pins, and link operations.

use std::ffi::{CStr, CString};
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::kernel::ffi::{self, check};

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
    /// Runs and time spent running, counted only while the kernel keeps
    /// run-time statistics (see `kernel::runstats`).
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// Bytes of native code; 0 when the program runs in the interpreter.
    pub jited_len: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// For XDP and tcx links: the interface, or 0 once it is gone.
    pub ifindex: u32,
}

/// Fills `info` from the kernel's program info.
///
/// # Safety
/// Every array `info` points to (map_ids, ...) holds as many elements as the
/// count beside it says.
unsafe fn fill_prog_info(fd: BorrowedFd<'_>, info: &mut libbpf_sys::bpf_prog_info) -> Result<()> {
    let mut len = mem::size_of_val(info) as u32;
    // SAFETY: `info` is a whole bpf_prog_info, `len` long, and the kernel
    // writes into arrays no more than their counts (the caller's promise).
    check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), info, &mut len) })
        .context("reading program info")?;
    Ok(())
}

pub fn prog_info(fd: BorrowedFd<'_>) -> Result<ProgInfo> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    // SAFETY: `info` points to no array.
    unsafe { fill_prog_info(fd, &mut info) }?;
    let name = info.name.map(|c| c as u8);
    let name = CStr::from_bytes_until_nul(&name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ProgInfo {
        id: info.id,
        name,
        prog_type: info.type_,
        load_time_ns: info.load_time,
        run_cnt: info.run_cnt,
        run_time_ns: info.run_time_ns,
        jited_len: info.jited_prog_len,
    })
}

/// The ids of the maps a program uses, as the kernel knows them: also the
/// maps that nothing pins.
pub fn prog_map_ids(fd: BorrowedFd<'_>) -> Result<Vec<u32>> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    // SAFETY: `info` points to no array.
    unsafe { fill_prog_info(fd, &mut info) }?;
    let mut ids = vec![0u32; info.nr_map_ids as usize];
    let mut info = libbpf_sys::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: map_ids points to `ids`, of nr_map_ids elements.
    unsafe { fill_prog_info(fd, &mut info) }.context("reading the map ids of a program")?;
    // Maps added between the two calls are not in the buffer.
    ids.truncate(info.nr_map_ids.min(ids.len() as u32) as usize);
    Ok(ids)
}

pub fn prog_info_by_id(id: u32) -> Result<ProgInfo> {
    prog_info(prog_by_id(id)?.as_fd())
}

pub fn prog_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: the call returns a fresh fd or -errno.
    unsafe { ffi::fd(libbpf_sys::bpf_prog_get_fd_by_id(id)) }
        .with_context(|| format!("opening program id {id}"))
}

pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo> {
    let info = raw_link_info(fd)?;
    // SAFETY: each union member is read for its own link type only.
    let ifindex = unsafe {
        match info.type_ {
            libbpf_sys::BPF_LINK_TYPE_XDP => info.__bindgen_anon_1.xdp.ifindex,
            libbpf_sys::BPF_LINK_TYPE_TCX => info.__bindgen_anon_1.tcx.ifindex,
            _ => 0,
        }
    };
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        ifindex,
    })
}

/// Fills `info` from the kernel's link info.
///
/// # Safety
/// Every buffer `info` points to (a name) is as long as the length beside
/// it says.
unsafe fn fill_link_info(fd: BorrowedFd<'_>, info: &mut libbpf_sys::bpf_link_info) -> Result<()> {
    let mut len = mem::size_of_val(info) as u32;
    // SAFETY: `info` is a whole bpf_link_info, `len` long, and the kernel
    // writes into buffers no more than their lengths (the caller's promise).
    check(unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), info, &mut len) })
        .context("reading link info")?;
    Ok(())
}

/// The kernel's whole link info.
pub fn raw_link_info(fd: BorrowedFd<'_>) -> Result<libbpf_sys::bpf_link_info> {
    let mut info = libbpf_sys::bpf_link_info::default();
    // SAFETY: `info` points to no buffer.
    unsafe { fill_link_info(fd, &mut info) }?;
    Ok(info)
}

/// [`raw_link_info`], with the name of what the link runs on (a raw
/// tracepoint, a tracepoint or a kprobe's function) written to `name`.
pub fn named_link_info(fd: BorrowedFd<'_>, name: &mut [u8]) -> Result<libbpf_sys::bpf_link_info> {
    let first = raw_link_info(fd)?;
    let (ptr, len) = (name.as_mut_ptr() as u64, name.len() as u32);
    let mut info = libbpf_sys::bpf_link_info::default();
    match first.type_ {
        libbpf_sys::BPF_LINK_TYPE_RAW_TRACEPOINT => {
            info.__bindgen_anon_1.raw_tracepoint.tp_name = ptr;
            info.__bindgen_anon_1.raw_tracepoint.tp_name_len = len;
        }
        libbpf_sys::BPF_LINK_TYPE_PERF_EVENT => {
            // SAFETY: the union member of the link's own type, read and
            // written as plain integers.
            let (perf, kind) = unsafe {
                (
                    &mut info.__bindgen_anon_1.perf_event,
                    first.__bindgen_anon_1.perf_event.type_,
                )
            };
            perf.type_ = kind;
            if kind == libbpf_sys::BPF_PERF_EVENT_TRACEPOINT {
                perf.__bindgen_anon_1.tracepoint.tp_name = ptr;
                perf.__bindgen_anon_1.tracepoint.name_len = len;
            } else {
                perf.__bindgen_anon_1.kprobe.func_name = ptr;
                perf.__bindgen_anon_1.kprobe.name_len = len;
            }
        }
        _ => {}
    }
    // SAFETY: the only buffer `info` points to is `name`, `len` long.
    unsafe { fill_link_info(fd, &mut info) }?;
    Ok(info)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    Prog,
    Map,
    Link,
    Other,
}

/// What a pinned fd holds; bpf(2) has no call for this, but the fd's
/// anonymous inode is named after the object type.
pub fn kind_of(fd: BorrowedFd<'_>) -> ObjKind {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    match target.as_str() {
        "anon_inode:bpf-prog" => ObjKind::Prog,
        "anon_inode:bpf-map" => ObjKind::Map,
        "anon_inode:bpf_link" | "anon_inode:bpf-link" => ObjKind::Link,
        _ => ObjKind::Other,
    }
}

/// Detaches a link from its hook now. Dropping the last reference (fd or
/// pin) also detaches it, but the kernel does that later, from a work queue.
pub fn detach_link(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: a plain call on an fd we hold.
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
    let mut opts: libbpf_sys::bpf_link_update_opts = ffi::opts();
    opts.flags = libbpf_sys::BPF_F_REPLACE;
    opts.old_prog_fd = expected.as_raw_fd() as u32;
    // SAFETY: fds we hold and options that outlive the call.
    check(unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), program.as_raw_fd(), &opts) })
        .context("swapping the program of a link")?;
    Ok(())
}

/// Runs a program once on `data` (BPF_PROG_TEST_RUN) and returns what it
/// returned: how user space asks a program to do what only programs can.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8]) -> Result<u32> {
    let mut opts: libbpf_sys::bpf_test_run_opts = ffi::opts();
    opts.data_in = data.as_ptr().cast();
    opts.data_size_in = data.len() as u32;
    opts.repeat = 1;
    // SAFETY: an fd we hold; the kernel only reads `data_size_in` bytes of
    // `data_in`, which outlives the call, and writes nothing back through
    // the options (no data_out, ctx_out).
    check(unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) })
        .context("running the program (BPF_PROG_TEST_RUN)")?;
    Ok(opts.retval)
}

pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = c_path(path)?;
    // SAFETY: an fd we hold and a NUL-terminated path.
    check(unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) })
        .with_context(|| format!("pinning at {}", path.display()))?;
    Ok(())
}

pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: a NUL-terminated path; the call returns a fresh fd or -errno.
    unsafe { ffi::fd(libbpf_sys::bpf_obj_get(c.as_ptr())) }
        .with_context(|| format!("opening pin {}", path.display()))
}
