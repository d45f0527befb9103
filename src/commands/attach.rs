//! `meshbpf attach IFACE`: load xdp_counter, attach it as a pinned bpf_link.

use anyhow::Result;
use serde::Serialize;

use crate::cli::AttachArgs;
use crate::error::{errno_of, Failure};
use crate::kernel::netdev::{self, Interface};
use crate::kernel::pins::StateRoot;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpffs, caps, objinfo};
use crate::output::{Output, Report};
use crate::programs::xdp_counter;
use crate::state::{self, Attachment, LinkState};

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Attached,
    AlreadyAttached,
}

#[derive(Debug, Serialize)]
struct AttachReport {
    status: Outcome,
    #[serde(flatten)]
    attachment: Attachment,
}

impl Report for AttachReport {
    fn render(&self) -> String {
        let a = &self.attachment;
        let mode = a.mode.map(XdpMode::as_str).unwrap_or("unknown");
        match self.status {
            Outcome::Attached => format!(
                "attached {} to {} in {mode} mode (prog id {}, link id {}); pinned at {}",
                a.program, a.interface, a.prog_id, a.link_id, a.pin_path
            ),
            Outcome::AlreadyAttached => format!(
                "{} is already attached to {} in {mode} mode (prog id {}, link id {}) since {}; nothing changed",
                a.program, a.interface, a.prog_id, a.link_id, a.attached_at
            ),
        }
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &AttachArgs) -> Result<()> {
    let iface = netdev::resolve(&args.interface)?;
    caps::require("attach", &[caps::BPF, caps::NET_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    let _lock = root.lock()?;
    let dir = root.attachment(&iface.name, xdp_counter::PROGRAM);

    if dir.is_committed() {
        let existing = state::inspect(&dir)?;
        match existing.state {
            LinkState::Attached => return already_attached(out, existing, args.mode),
            LinkState::Elsewhere => {
                return Err(Failure::new(format!(
                    "the pins at {} belong to a live attachment (link id {}) that is not on {} in this network namespace",
                    existing.pin_path, existing.link_id, iface.name
                ))
                .hint("it was attached from another network namespace; detach it there, or pick another --bpffs root here")
                .into())
            }
            LinkState::Defunct => {}
        }
    }
    // What is left is stale: a defunct link, or the link-less directory of a
    // command that was interrupted.
    if dir.exists() {
        dir.remove()?;
    }
    if let Some(current) = xdp::query(iface.index)? {
        return Err(foreign_program(&iface, current));
    }

    let mode = args.mode.unwrap_or(XdpMode::Native);
    if let Err(err) = xdp_counter::attach(&dir, &iface, mode, args.btf.as_deref()) {
        // The link was never pinned, so it is already gone with its fd.
        if dir.exists() {
            dir.remove()?;
        }
        return Err(explain_attach_error(err, &iface));
    }
    out.emit(&AttachReport {
        status: Outcome::Attached,
        attachment: state::inspect(&dir)?,
    })?;
    Ok(())
}

fn already_attached(out: &Output, existing: Attachment, requested: Option<XdpMode>) -> Result<()> {
    if let (Some(want), Some(have)) = (requested, existing.mode) {
        if want != have {
            return Err(Failure::new(format!(
                "{} is already attached to {} in {} mode, not {} mode",
                existing.program,
                existing.interface,
                have.as_str(),
                want.as_str()
            ))
            .hint(format!(
                "to change the mode: meshbpf detach {0} && meshbpf attach {0} --mode {1}",
                existing.interface,
                want.as_str()
            ))
            .into());
        }
    }
    out.emit(&AttachReport {
        status: Outcome::AlreadyAttached,
        attachment: existing,
    })?;
    Ok(())
}

fn foreign_program(iface: &Interface, current: xdp::Current) -> anyhow::Error {
    let name = objinfo::prog_info_by_id(current.prog_id)
        .map(|p| p.name)
        .unwrap_or_else(|_| "?".into());
    let mode = current
        .mode
        .map(|m| format!(", {} mode", m.as_str()))
        .unwrap_or_default();
    Failure::new(format!(
        "{} already runs an XDP program that meshbpf did not attach: id {}, name '{name}'{mode}",
        iface.name, current.prog_id
    ))
    .hint(format!(
        "meshbpf never replaces another tool's program; remove it with the tool that attached it \
(for a plain netlink attachment: ip link set dev {} xdp off) and attach again",
        iface.name
    ))
    .into()
}

/// Another tool can attach between our check and our attach; the kernel then
/// refuses with EBUSY/EEXIST and we name the newcomer.
fn explain_attach_error(err: anyhow::Error, iface: &Interface) -> anyhow::Error {
    match errno_of(&err) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => match xdp::query(iface.index) {
            Ok(Some(current)) => foreign_program(iface, current),
            _ => err,
        },
        Some(libc::EPERM) => err.context(caps::explain_eperm(&format!(
            "attach XDP to {}",
            iface.name
        ))),
        _ => err,
    }
}
