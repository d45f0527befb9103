//! What a link is attached to, in words, from the kernel's own link info:
//! the interface, tracepoint, cgroup or kernel function, and how.

use std::ffi::CStr;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::kernel::{bpfobj, netdev, xdp};

/// Whether a pinned link still runs where its pin says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// The link runs the pinned program on the interface of that name here.
    Attached,
    /// The link no longer runs: its interface was deleted, or a detach was
    /// interrupted after detaching it.
    Defunct,
    /// The link is live, but not on an interface of that name in this
    /// network namespace (it was attached from another one).
    Elsewhere,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hooked {
    pub link_id: u32,
    pub prog_id: u32,
    /// The interface (with the direction for tc), tracepoint, cgroup
    /// directory or function the link runs the program on.
    pub attach_point: String,
    /// How: `xdp native`, `xdp skb`, `tcx`, `tracepoint`, `raw_tp`,
    /// `tp_btf`, `cgroup_skb`, `kprobe`...
    pub method: String,
    pub state: LinkState,
}

const NAME_BUF: usize = 256;

fn c_string(buf: &[u8]) -> String {
    CStr::from_bytes_until_nul(buf)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Describes a link; interfaces are named as they are in this network
/// namespace.
pub fn describe(fd: BorrowedFd<'_>) -> Result<Hooked> {
    let mut name = [0u8; NAME_BUF];
    let info = bpfobj::named_link_info(fd, &mut name)?;
    let (attach_point, method, state) = match info.type_ {
        libbpf_sys::BPF_LINK_TYPE_XDP => {
            // SAFETY: the union member matches the link type.
            let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
            let mode = xdp::query(ifindex)
                .ok()
                .flatten()
                .filter(|c| c.prog_id == info.prog_id)
                .and_then(|c| c.mode)
                .map(|m| format!("xdp {}", m.as_str()))
                .unwrap_or_else(|| "xdp".into());
            let (point, state) = interface(ifindex);
            (point, mode, state)
        }
        libbpf_sys::BPF_LINK_TYPE_TCX => {
            // SAFETY: the union member matches the link type.
            let tcx = unsafe { info.__bindgen_anon_1.tcx };
            let direction = if tcx.attach_type == libbpf_sys::BPF_TCX_EGRESS {
                "egress"
            } else {
                "ingress"
            };
            let (point, state) = interface(tcx.ifindex);
            (format!("{point} {direction}"), "tcx".into(), state)
        }
        libbpf_sys::BPF_LINK_TYPE_RAW_TRACEPOINT => {
            // tp_btf programs attach through raw tracepoint links too.
            let typed = bpfobj::prog_info_by_id(info.prog_id)
                .is_ok_and(|p| p.prog_type == libbpf_sys::BPF_PROG_TYPE_TRACING);
            let method = if typed { "tp_btf" } else { "raw_tp" };
            (c_string(&name), method.into(), LinkState::Attached)
        }
        libbpf_sys::BPF_LINK_TYPE_TRACING => {
            // SAFETY: the union member matches the link type.
            let tracing = unsafe { info.__bindgen_anon_1.tracing };
            (
                btf_target(tracing.target_btf_id),
                attach_type_name(tracing.attach_type),
                LinkState::Attached,
            )
        }
        libbpf_sys::BPF_LINK_TYPE_CGROUP => {
            // SAFETY: the union member matches the link type.
            let cgroup = unsafe { info.__bindgen_anon_1.cgroup };
            let method = match cgroup.attach_type {
                libbpf_sys::BPF_CGROUP_INET_INGRESS => "cgroup_skb ingress".into(),
                libbpf_sys::BPF_CGROUP_INET_EGRESS => "cgroup_skb egress".into(),
                other => attach_type_name(other),
            };
            // A removed cgroup leaves its links attached to nothing.
            match cgroup.cgroup_id {
                0 => ("removed cgroup".into(), method, LinkState::Defunct),
                id => (
                    cgroup_path(id)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| format!("cgroup id {id}")),
                    method,
                    LinkState::Attached,
                ),
            }
        }
        libbpf_sys::BPF_LINK_TYPE_PERF_EVENT => {
            // SAFETY: the union member matches the link type.
            let kind = unsafe { info.__bindgen_anon_1.perf_event.type_ };
            let method = match kind {
                libbpf_sys::BPF_PERF_EVENT_TRACEPOINT => "tracepoint",
                libbpf_sys::BPF_PERF_EVENT_KPROBE => "kprobe",
                libbpf_sys::BPF_PERF_EVENT_KRETPROBE => "kretprobe",
                // Kernels before 6.6 describe no perf_event link: the
                // program's type still tells a kprobe from a tracepoint.
                _ => match bpfobj::prog_info_by_id(info.prog_id).map(|p| p.prog_type) {
                    Ok(libbpf_sys::BPF_PROG_TYPE_KPROBE) => "kprobe",
                    Ok(libbpf_sys::BPF_PROG_TYPE_TRACEPOINT) => "tracepoint",
                    _ => "perf_event",
                },
            };
            (c_string(&name), method.into(), LinkState::Attached)
        }
        other => (
            String::new(),
            libbpf_name(libbpf_sys::libbpf_bpf_link_type_str, other),
            LinkState::Attached,
        ),
    };
    Ok(Hooked {
        link_id: info.id,
        prog_id: info.prog_id,
        attach_point,
        method,
        state,
    })
}

/// An interface by index: its name here, or why it has none.
fn interface(ifindex: u32) -> (String, LinkState) {
    if ifindex == 0 {
        return ("deleted interface".into(), LinkState::Defunct);
    }
    match netdev::name_of(ifindex) {
        Some(name) => (name, LinkState::Attached),
        None => (
            format!("ifindex {ifindex} in another network namespace"),
            LinkState::Elsewhere,
        ),
    }
}

/// The name one of libbpf's `libbpf_bpf_*_str` functions gives a kernel
/// enum value; "unknown" for values this libbpf does not know.
fn libbpf_name(to_str: unsafe extern "C" fn(u32) -> *const libc::c_char, value: u32) -> String {
    // SAFETY: these functions take any value and return a static
    // NUL-terminated string, or null for values they do not know.
    unsafe {
        let name = to_str(value);
        if name.is_null() {
            return "unknown".into();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// `xdp`, `sched_cls`, `tracing`...
pub fn prog_type_name(prog_type: u32) -> String {
    libbpf_name(libbpf_sys::libbpf_bpf_prog_type_str, prog_type)
}

/// `array`, `hash`, `percpu_array`...
pub fn map_type_name(map_type: u32) -> String {
    libbpf_name(libbpf_sys::libbpf_bpf_map_type_str, map_type)
}

fn attach_type_name(attach_type: u32) -> String {
    libbpf_name(libbpf_sys::libbpf_bpf_attach_type_str, attach_type)
}

/// The kernel function or tracepoint a BTF-typed link targets, from the
/// kernel's BTF (`btf_trace_<tp>` typedefs name tp_btf targets).
fn btf_target(btf_id: u32) -> String {
    let name = libbpf_rs::btf::Btf::from_vmlinux().ok().and_then(|btf| {
        btf.type_by_id::<libbpf_rs::btf::BtfType<'_>>(btf_id.into())
            .and_then(|t| t.name().map(|n| n.to_string_lossy().into_owned()))
    });
    match name {
        Some(name) => name
            .strip_prefix("btf_trace_")
            .map(str::to_string)
            .unwrap_or(name),
        None => format!("btf id {btf_id}"),
    }
}

/// The cgroup v2 mount points, from this process's mount table.
fn cgroup2_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The directory of a cgroup by id (its inode number on cgroup2), searched
/// breadth-first under each cgroup2 mount; None when it is not found.
pub fn cgroup_path(id: u64) -> Option<PathBuf> {
    const MAX_DIRS: usize = 100_000;
    let mut queue: std::collections::VecDeque<PathBuf> = cgroup2_mounts().into();
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        if fs::metadata(&dir).ok().map(|m| m.ino()) == Some(id) {
            return Some(dir);
        }
        seen += 1;
        if seen > MAX_DIRS {
            return None;
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    None
}
