//! SCHED_CLS programs on an interface's ingress and egress: tcx links where
//! the kernel has them (probed by attaching, never guessed from a version),
//! netlink clsact filters otherwise.
//!
//! On clsact, meshbpf's filters carry their own handle and priority, so other
//! tools' filters on the same qdisc are never touched, and the qdisc is
//! deleted only when no filter at all is left on it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use libbpf_rs::{
    TcHook, TcHookBuilder, TC_EGRESS, TC_H_CLSACT, TC_H_MIN_EGRESS, TC_H_MIN_INGRESS, TC_INGRESS,
};
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::netdev::Interface;
use crate::kernel::{bpfobj, ffi, hooks};
use crate::proto::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TcMethod {
    /// bpf_link based multi-program attachment (kernel 6.6 and later)
    Tcx,
    /// cls_bpf filters on a clsact qdisc, through netlink
    Netlink,
}

impl TcMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TcMethod::Tcx => "tcx",
            TcMethod::Netlink => "netlink",
        }
    }
}

fn tcx_attach_type(direction: Direction) -> libbpf_sys::bpf_attach_type {
    match direction {
        Direction::Ingress => libbpf_sys::BPF_TCX_INGRESS,
        Direction::Egress => libbpf_sys::BPF_TCX_EGRESS,
    }
}

fn clsact_parent(direction: Direction) -> u32 {
    let minor = match direction {
        Direction::Ingress => TC_H_MIN_INGRESS,
        Direction::Egress => TC_H_MIN_EGRESS,
    };
    (TC_H_CLSACT & 0xFFFF_0000) | minor
}

/// meshbpf's cls_bpf filters: handle "MB", and a priority late enough that
/// filters other tools placed first keep running first.
pub const FILTER_HANDLE: u32 = 0x4d42;
pub const FILTER_PRIORITY: u32 = 0xFF00;

/// A tcx link, appended after the programs already there; it detaches when
/// its last fd or pin goes.
pub fn attach_tcx(
    prog: BorrowedFd<'_>,
    iface: &Interface,
    direction: Direction,
) -> Result<OwnedFd> {
    hooks::link_create(prog, iface.index as i32, tcx_attach_type(direction))
        .with_context(|| format!("attaching a tcx {direction:?} link to {}", iface.name))
}

fn hook(prog: BorrowedFd<'_>, iface: &Interface, direction: Direction) -> TcHook {
    let mut builder = TcHookBuilder::new(prog);
    builder
        .ifindex(iface.index as i32)
        .handle(FILTER_HANDLE)
        .priority(FILTER_PRIORITY);
    builder.hook(match direction {
        Direction::Ingress => TC_INGRESS,
        Direction::Egress => TC_EGRESS,
    })
}

/// Adds meshbpf's filter to the clsact qdisc (created if missing). A filter
/// already at meshbpf's handle and priority is never replaced: meshbpf's own
/// leftovers are recorded in its pins and removed before an attach, so one
/// found here is another tool's, and is named.
pub fn attach_netlink(prog: BorrowedFd<'_>, iface: &Interface, direction: Direction) -> Result<()> {
    if let Some(id) = netlink_prog_id(prog, iface, direction)? {
        return Err(foreign_filter(iface, direction, id).into());
    }
    let mut hook = hook(prog, iface, direction);
    hook.create()
        .with_context(|| format!("creating the clsact qdisc on {}", iface.name))?;
    if let Err(err) = hook.attach() {
        // Another tool got there between the query and the attach.
        if let Ok(Some(id)) = netlink_prog_id(prog, iface, direction) {
            return Err(foreign_filter(iface, direction, id).into());
        }
        return Err(anyhow::Error::new(err).context(format!(
            "attaching a clsact {direction:?} filter to {}",
            iface.name
        )));
    }
    Ok(())
}

fn foreign_filter(iface: &Interface, direction: Direction, id: u32) -> Failure {
    let name = bpfobj::prog_info_by_id(id)
        .map(|p| p.name)
        .unwrap_or_else(|_| "?".into());
    let hook = direction.as_str();
    Failure::new(format!(
        "{} already has a clsact {hook} filter at meshbpf's handle {FILTER_HANDLE:#x} and priority {FILTER_PRIORITY} that meshbpf did not attach: program id {id}, name '{name}'",
        iface.name
    ))
    .hint(format!(
        "meshbpf never replaces another tool's filter; remove it with the tool that added it \
(tc filter del dev {} {hook} pref {FILTER_PRIORITY} handle {FILTER_HANDLE:#x} bpf) and attach again",
        iface.name
    ))
}

/// The program id of the filter at meshbpf's handle and priority, whoever
/// added it; None when there is none, or no clsact qdisc at all.
pub fn netlink_prog_id(
    prog: BorrowedFd<'_>,
    iface: &Interface,
    direction: Direction,
) -> Result<Option<u32>> {
    match hook(prog, iface, direction).query() {
        Ok(id) => Ok(Some(id)),
        // ENOENT: no such filter; EINVAL: no clsact qdisc to hold one.
        Err(e)
            if matches!(
                e.kind(),
                libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "looking up meshbpf's clsact {direction:?} filter on {}",
            iface.name
        ))),
    }
}

/// Removes meshbpf's clsact filters, the ones running `ingress` and
/// `egress` (the programs recorded before they were added), then the qdisc
/// if nothing else uses it. Re-runnable from any point: a filter or qdisc
/// already gone is fine, and a filter at meshbpf's handle and priority that
/// runs another program is another tool's and stays.
pub fn detach_netlink(
    iface: &Interface,
    ingress: BorrowedFd<'_>,
    egress: Option<BorrowedFd<'_>>,
) -> Result<()> {
    for (direction, prog) in [
        (Direction::Ingress, Some(ingress)),
        (Direction::Egress, egress),
    ] {
        let Some(prog) = prog else { continue };
        let ours = bpfobj::prog_info(prog)?.id;
        match netlink_prog_id(prog, iface, direction)? {
            None => continue,
            Some(id) if id != ours => {
                log::warn!("{}", foreign_filter(iface, direction, id));
                continue;
            }
            Some(_) => {}
        }
        match hook(prog, iface, direction).detach() {
            Err(e)
                if !matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) =>
            {
                return Err(anyhow::Error::new(e).context(format!(
                    "removing meshbpf's clsact {direction:?} filter from {}",
                    iface.name
                )))
            }
            _ => {}
        }
    }
    let others = Direction::BOTH
        .iter()
        .map(|d| filters_on(iface, *d))
        .collect::<Result<Vec<usize>>>()?;
    if others.iter().all(|&n| n == 0) {
        let mut qdisc = hook(ingress, iface, Direction::Ingress);
        qdisc.attach_point(TC_INGRESS | TC_EGRESS);
        match qdisc.destroy() {
            Err(e)
                if !matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) =>
            {
                return Err(anyhow::Error::new(e)
                    .context(format!("removing the empty clsact qdisc of {}", iface.name)))
            }
            _ => {}
        }
    }
    Ok(())
}

#[repr(C)]
struct TcMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
struct FilterDump {
    header: libc::nlmsghdr,
    tc: TcMsg,
}

/// How many filters a clsact hook holds (an RTM_GETTFILTER dump); 0 when
/// there is no clsact qdisc.
pub fn filters_on(iface: &Interface, direction: Direction) -> Result<usize> {
    // SAFETY: socket(2) returns a fresh fd or -1.
    let socket = unsafe {
        ffi::os_fd(
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
            .into(),
        )
    }
    .context("opening a netlink socket")?;
    let request = FilterDump {
        header: libc::nlmsghdr {
            nlmsg_len: mem::size_of::<FilterDump>() as u32,
            nlmsg_type: libc::RTM_GETTFILTER,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc: TcMsg {
            family: libc::AF_UNSPEC as u8,
            pad1: 0,
            pad2: 0,
            ifindex: iface.index as i32,
            handle: 0,
            parent: clsact_parent(direction),
            info: 0,
        },
    };
    // SAFETY: a socket we own, and the whole request, which outlives the call.
    ffi::check_os(unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&request as *const FilterDump).cast(),
            mem::size_of::<FilterDump>(),
            0,
        )
    })
    .context("asking netlink for the clsact filters")?;
    let mut count = 0;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: a socket we own and a buffer of the length we pass.
        let got = ffi::check_os(unsafe {
            libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
        })
        .context("reading the clsact filters from netlink")? as usize;
        let mut offset = 0;
        while offset + mem::size_of::<libc::nlmsghdr>() <= got {
            // SAFETY: the loop keeps a whole nlmsghdr within the bytes received,
            // and read_unaligned needs no alignment.
            let header = unsafe {
                std::ptr::read_unaligned(buf[offset..].as_ptr().cast::<libc::nlmsghdr>())
            };
            match header.nlmsg_type as i32 {
                libc::NLMSG_DONE => return Ok(count),
                libc::NLMSG_ERROR => {
                    // An nlmsgerr: the error number right after the header.
                    let at = offset + mem::size_of::<libc::nlmsghdr>();
                    let errno = buf
                        .get(at..at + 4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    // No clsact qdisc: no filters.
                    if errno == -libc::EINVAL || errno == -libc::ENOENT {
                        return Ok(0);
                    }
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno))
                            .context("listing clsact filters");
                    }
                    return Ok(count);
                }
                t if t == libc::RTM_NEWTFILTER as i32 => count += 1,
                _ => {}
            }
            let len = header.nlmsg_len as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}

/// Explains a tcx refusal, so that `--tc-method tcx` on an old kernel says why.
pub fn tcx_refused(iface: &Interface) -> Failure {
    Failure::new(format!("the kernel refuses tcx links on {}", iface.name))
        .hint("tcx needs Linux 6.6 or later; attach with --tc-method netlink (clsact) instead, or leave the method to the probe")
}
