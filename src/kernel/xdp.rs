//! XDP attachment through bpf_link, with an explicit mode and no fallback.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::Failure;
use crate::kernel::ffi;
use crate::kernel::netdev::Interface;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before an skb exists (fastest; needs driver support).
    Native,
    /// Generic XDP on the skb path (works on any interface, slower).
    Skb,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }

    fn flag(self) -> u32 {
        match self {
            XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// The XDP program an interface runs now, whoever attached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub prog_id: u32,
    /// None for offloaded or multi-mode attachments, which meshbpf never makes.
    pub mode: Option<XdpMode>,
}

pub fn query(ifindex: u32) -> Result<Option<Current>> {
    let mut opts: libbpf_sys::bpf_xdp_query_opts = ffi::opts();
    // SAFETY: options the call writes into, which outlive it.
    ffi::check(unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) })
        .with_context(|| format!("querying the XDP program of ifindex {ifindex}"))?;
    let mode = match opts.attach_mode as u32 {
        libbpf_sys::XDP_ATTACHED_NONE => return Ok(None),
        libbpf_sys::XDP_ATTACHED_DRV => Some(XdpMode::Native),
        libbpf_sys::XDP_ATTACHED_SKB => Some(XdpMode::Skb),
        _ => None,
    };
    let prog_id = [
        opts.prog_id,
        opts.drv_prog_id,
        opts.skb_prog_id,
        opts.hw_prog_id,
    ]
    .into_iter()
    .find(|&id| id != 0)
    .unwrap_or(0);
    Ok(Some(Current { prog_id, mode }))
}

/// Attaches `prog` to `iface` as a bpf_link in exactly `mode`. The link
/// detaches when its last fd or pin goes, so a command that dies before
/// pinning it leaves the interface as it was.
pub fn create_link(prog: BorrowedFd<'_>, iface: &Interface, mode: XdpMode) -> Result<OwnedFd> {
    let mut opts: libbpf_sys::bpf_link_create_opts = ffi::opts();
    opts.flags = mode.flag();
    // SAFETY: a program fd we hold and options that outlive the call, which
    // returns a fresh fd or -errno.
    let link = unsafe {
        ffi::fd(libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            iface.index as i32,
            libbpf_sys::BPF_XDP,
            &opts,
        ))
    };
    let err = match link {
        Ok(link) => return Ok(link),
        Err(err) => err,
    };
    let errno = err.raw_os_error();
    let err = anyhow::Error::new(err);
    if errno == Some(libc::EOPNOTSUPP) && mode == XdpMode::Native {
        return Err(err.context(
            Failure::new(format!(
                "the driver of {} has no native XDP support",
                iface.name
            ))
            .hint(format!(
                "attach in generic mode instead: meshbpf attach {} --mode skb",
                iface.name
            )),
        ));
    }
    Err(err.context(format!(
        "attaching XDP to {} in {} mode",
        iface.name,
        mode.as_str()
    )))
}
