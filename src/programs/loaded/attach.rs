//! `attach --object NAME --prog PROG`: a program of a loaded object on the
//! hook its section names, as a pinned bpf_link.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::section::{self, Hook};
use super::{LoadedDir, ProgramMeta};
use crate::error::Failure;
use crate::kernel::links::LinkState;
use crate::kernel::links::{self, Hooked};
use crate::kernel::netdev::{self, Interface};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpfobj, caps, hooks, probe, tc, tracefs};

pub struct Request<'a> {
    pub object: &'a str,
    pub program: Option<&'a str>,
    /// The interface (xdp, tc) or cgroup directory (cgroup_skb).
    pub target: Option<&'a str>,
    pub mode: Option<XdpMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Attached,
    AlreadyAttached,
}

pub struct Done {
    pub outcome: Outcome,
    pub program: ProgramMeta,
    pub hooked: Hooked,
    /// The link pin.
    pub pin_path: PathBuf,
    /// Set when this command mounted tracefs.
    pub mounted_tracefs: Option<PathBuf>,
}

/// Attaches; run under the exclusive lock.
pub fn attach(root: &StateRoot, request: &Request<'_>) -> Result<Done> {
    let dir = LoadedDir::new(root, request.object);
    if !dir.exists() {
        return Err(Failure::new(format!("no object named '{}' is loaded", request.object))
            .hint(format!(
                "load it first (meshbpf load FILE.bpf.o --name {}); `meshbpf list` shows what is loaded",
                request.object
            ))
            .into());
    }
    let program = pick_program(&dir, request.program)?;
    let hook = Hook::of(&program.section);
    if request.mode.is_some() && hook != Hook::Xdp {
        return Err(Failure::new(format!(
            "--mode is for XDP programs; '{}' is a {} program",
            program.name, program.section
        ))
        .hint("leave --mode out")
        .into());
    }
    let needs: &[caps::Need] = if hook.on_interface() || matches!(hook, Hook::CgroupSkb { .. }) {
        &[caps::BPF, caps::NET_ADMIN]
    } else {
        &[caps::BPF]
    };
    caps::require("attach", needs)?;
    let prog = bpfobj::open_pinned(&dir.prog(&program.name))?;
    if hook.on_interface() {
        let target = request
            .target
            .ok_or_else(|| needs_target(request, &program, "an interface", "IFACE"))?;
        let iface = netdev::resolve(target)?;
        let adir = root.attachment(&iface.name, &dir.attachment_name(&program.name));
        return attach_interface(&adir, &hook, prog.as_fd(), &iface, request.mode).map(
            |(outcome, hooked)| Done {
                outcome,
                program,
                hooked,
                pin_path: adir.link(),
                mounted_tracefs: None,
            },
        );
    }
    let link_pin = dir.link(&program.name);
    let cgroup = match (&hook, request.target) {
        (Hook::CgroupSkb { .. }, Some(path)) => Some(PathBuf::from(path)),
        (Hook::CgroupSkb { .. }, None) => {
            return Err(needs_target(
                request,
                &program,
                "a cgroup directory",
                "CGROUP_DIR",
            ))
        }
        (_, Some(target)) => {
            return Err(Failure::new(format!(
                "program '{}' ({}) does not attach to '{target}'",
                program.name, program.section
            ))
            .hint(format!(
                "its section names the hook: meshbpf attach --object {} --prog {}",
                request.object, program.name
            ))
            .into())
        }
        (_, None) => None,
    };
    if let Some(existing) = existing_link(&link_pin)? {
        check_same_cgroup(&program, &existing, cgroup.as_deref())?;
        return Ok(Done {
            outcome: Outcome::AlreadyAttached,
            program,
            hooked: existing,
            pin_path: link_pin,
            mounted_tracefs: None,
        });
    }
    let mut mounted_tracefs = None;
    let link = match &hook {
        Hook::Tracepoint { category, name } => {
            let (path, mounted) = tracefs::ensure_mounted()?;
            if mounted {
                mounted_tracefs = Some(path.clone());
            }
            hooks::attach_tracepoint(prog.as_fd(), &path, category, name)?
        }
        Hook::RawTracepoint(name) => hooks::attach_raw(prog.as_fd(), Some(name))?,
        Hook::BtfTyped { .. } => hooks::attach_raw(prog.as_fd(), None)?,
        Hook::CgroupSkb { egress } => {
            let attach_type = if *egress {
                libbpf_sys::BPF_CGROUP_INET_EGRESS
            } else {
                libbpf_sys::BPF_CGROUP_INET_INGRESS
            };
            let path = cgroup.as_deref().expect("checked above");
            hooks::attach_cgroup(prog.as_fd(), path, attach_type)?
        }
        Hook::Kprobe { function, retprobe } => {
            hooks::attach_kprobe(prog.as_fd(), function, *retprobe)?
        }
        Hook::Xdp | Hook::Tc(_) | Hook::Unsupported => {
            return Err(Failure::new(format!(
                "meshbpf cannot attach program '{}': it does not know section '{}'",
                program.name, program.section
            ))
            .hint(format!("sections meshbpf attaches: {}", section::SUPPORTED))
            .into())
        }
    };
    bpfobj::pin(link.as_fd(), &link_pin)?;
    Ok(Done {
        outcome: Outcome::Attached,
        program,
        hooked: links::describe(link.as_fd())?,
        pin_path: link_pin,
        mounted_tracefs,
    })
}

/// The named program, or the only one.
fn pick_program(dir: &LoadedDir, wanted: Option<&str>) -> Result<ProgramMeta> {
    let meta = dir.meta()?;
    let listing = || {
        meta.programs
            .iter()
            .map(|p| format!("{} ({})", p.name, p.section))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(name) => meta
            .programs
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                Failure::new(format!("object '{}' has no program '{name}'", dir.name))
                    .hint(format!("its programs: {}", listing()))
                    .into()
            }),
        None if meta.programs.len() == 1 => Ok(meta.programs[0].clone()),
        None => Err(Failure::new(format!(
            "object '{}' has {} programs; say which one with --prog",
            dir.name,
            meta.programs.len()
        ))
        .hint(format!("its programs: {}", listing()))
        .into()),
    }
}

/// A hook that needs a target (`what`, written `placeholder` in usage) got
/// none.
fn needs_target(
    request: &Request<'_>,
    program: &ProgramMeta,
    what: &str,
    placeholder: &str,
) -> anyhow::Error {
    Failure::new(format!(
        "program '{}' ({}) attaches to {what}, and none was given",
        program.name, program.section
    ))
    .hint(format!(
        "meshbpf attach {placeholder} --object {} --prog {}",
        request.object, program.name
    ))
    .into()
}

/// The live link pinned at `pin`, if any; a defunct one is removed.
fn existing_link(pin: &Path) -> Result<Option<Hooked>> {
    if !pin.exists() {
        return Ok(None);
    }
    let fd = bpfobj::open_pinned(pin)?;
    let hooked = links::describe(fd.as_fd())?;
    if hooked.state != LinkState::Defunct {
        return Ok(Some(hooked));
    }
    bpfobj::detach_link(fd.as_fd())?;
    fs::remove_file(pin).map_err(anyhow::Error::new)?;
    Ok(None)
}

/// meshbpf keeps one attachment per program outside interfaces.
fn check_same_cgroup(
    program: &ProgramMeta,
    existing: &Hooked,
    wanted: Option<&Path>,
) -> Result<()> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    let same = fs::canonicalize(wanted).ok() == fs::canonicalize(&existing.attach_point).ok();
    if same {
        return Ok(());
    }
    Err(Failure::new(format!(
        "program '{}' is already attached to cgroup {}",
        program.name, existing.attach_point
    ))
    .hint("a program has one attachment outside interfaces; unload the object and load it again to move it")
    .into())
}

fn attach_interface(
    adir: &AttachmentDir,
    hook: &Hook,
    prog: BorrowedFd<'_>,
    iface: &Interface,
    mode: Option<XdpMode>,
) -> Result<(Outcome, Hooked)> {
    if adir.link().exists() {
        let existing = links::describe(bpfobj::open_pinned(&adir.link())?.as_fd())?;
        if existing.state == LinkState::Attached {
            return Ok((Outcome::AlreadyAttached, existing));
        }
        adir.remove()?;
    } else if adir.exists() {
        adir.unpin()?;
    }
    let link = match hook {
        Hook::Xdp => {
            if let Some(current) = xdp::query(iface.index)? {
                return Err(occupied(iface, current.prog_id));
            }
            xdp::create_link(prog, iface, mode.unwrap_or(XdpMode::Native))?
        }
        Hook::Tc(direction) => {
            if !probe::tcx_available(iface) {
                return Err(Failure::new(format!(
                    "the kernel refuses tcx links on {}, and loaded tc programs attach through tcx only",
                    iface.name
                ))
                .hint("tcx needs Linux 6.6 or later")
                .into());
            }
            tc::attach_tcx(prog, iface, *direction)?
        }
        _ => unreachable!("only interface hooks come here"),
    };
    let committed = pin_attachment(adir, prog, &link);
    if committed.is_err() && adir.exists() {
        adir.unpin()?;
    }
    committed?;
    Ok((Outcome::Attached, links::describe(link.as_fd())?))
}

/// The program, then the link, which commits the attachment.
fn pin_attachment(adir: &AttachmentDir, prog: BorrowedFd<'_>, link: &OwnedFd) -> Result<()> {
    adir.create()?;
    bpfobj::pin(prog, &adir.prog())?;
    bpfobj::pin(link.as_fd(), &adir.link())
}

/// An interface already runs an XDP program: name it, and say whether it
/// is one of meshbpf's.
fn occupied(iface: &Interface, prog_id: u32) -> anyhow::Error {
    let name = bpfobj::prog_info_by_id(prog_id)
        .map(|p| p.name)
        .unwrap_or_else(|_| "?".into());
    Failure::new(format!(
        "{} already runs XDP program id {prog_id} ('{name}'); an interface runs one XDP program",
        iface.name
    ))
    .hint(format!(
        "if meshbpf attached it, `meshbpf detach {}` removes it; otherwise remove it with the tool that attached it. meshbpf never replaces it",
        iface.name
    ))
    .into()
}
