//! meshbpf's own state: every pin directory under the root must belong to a
//! live attachment, tables should have room, and filters should not drop
//! most of what they judge. What an interrupted command left is named as
//! `state::interface::leftovers` describes it (an unfinished swap, tc
//! without XDP, uncommitted pins), and `--fix` settles it the way the next
//! command would (`state::interface::reconcile`: finish a swap, never delete
//! what finishing needs), then removes what is provably orphaned: a
//! directory whose link no longer runs or whose interface is gone.

use std::fs;
use std::os::fd::AsFd;

use anyhow::{Context, Result};

use crate::health::{Check, Fix};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::tc;
use crate::kernel::{bpffs, bpfobj, netdev};
use crate::programs::{self, Scope};
use crate::proto::Direction;
use crate::state::{self, interface, LinkState};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Liveness {
    Attached(String),
    /// Live, on an interface of another network namespace.
    Elsewhere(String),
    /// Provably dead: safe to remove.
    Orphaned(String),
    /// Cannot be told from here.
    Unknown(String),
}

fn liveness(dir: &AttachmentDir, siblings: &[AttachmentDir]) -> Result<Liveness> {
    if !dir.is_committed() {
        return Ok(Liveness::Orphaned(
            "no link pin: a command was interrupted before it committed".into(),
        ));
    }
    if !dir.link().exists() {
        return clsact_liveness(dir, siblings);
    }
    let a = state::inspect(dir)?;
    Ok(match a.state {
        LinkState::Attached => Liveness::Attached(format!(
            "link {} runs program {} on {}",
            a.link_id, a.prog_id, a.interface
        )),
        LinkState::Elsewhere => Liveness::Elsewhere(format!(
            "link {} runs program {} on an interface in another network namespace",
            a.link_id, a.prog_id
        )),
        LinkState::Defunct => Liveness::Orphaned(format!(
            "link {} no longer runs: its interface was deleted, or a detach was interrupted",
            a.link_id
        )),
    })
}

/// Netlink clsact filters have no link to ask. The interface's XDP link, in
/// the same directory, says whether the interface still exists and where;
/// on an interface here, the filter itself is looked up.
fn clsact_liveness(dir: &AttachmentDir, siblings: &[AttachmentDir]) -> Result<Liveness> {
    if let Some(sibling) = siblings
        .iter()
        .find(|s| s.path != dir.path && s.link().exists())
    {
        let a = state::inspect(sibling)?;
        match a.state {
            LinkState::Defunct => {
                return Ok(Liveness::Orphaned(format!(
                    "the link of {} on the same interface is defunct: the interface was deleted",
                    a.program
                )))
            }
            LinkState::Elsewhere => {
                return Ok(Liveness::Elsewhere(
                    "netlink clsact filters on an interface in another network namespace".into(),
                ))
            }
            LinkState::Attached => {}
        }
    }
    let Ok(iface) = netdev::resolve(&dir.interface) else {
        return Ok(Liveness::Unknown(format!(
            "no interface {} in this network namespace, and no link to ask whether it exists in another",
            dir.interface
        )));
    };
    let prog = bpfobj::open_pinned(&dir.clsact())?;
    let id = bpfobj::prog_info(prog.as_fd())?.id;
    Ok(
        if tc::netlink_prog_id(prog.as_fd(), &iface, Direction::Ingress)? == Some(id) {
            Liveness::Attached(format!(
                "netlink clsact filters run program {id} on {}",
                iface.name
            ))
        } else {
            Liveness::Orphaned(format!(
                "meshbpf's clsact filter is no longer on {}",
                iface.name
            ))
        },
    )
}

fn attachment_check(dir: &AttachmentDir, live: &Result<Liveness>) -> Check {
    let pins = dir.path.display();
    let check = match live {
        Ok(Liveness::Attached(detail)) => Check::ok("attachment", detail.clone()),
        Ok(Liveness::Elsewhere(detail)) => Check::ok(
            "attachment",
            format!("{detail}; run meshbpf health there to check it"),
        ),
        Ok(Liveness::Orphaned(why)) => Check::fail(
            "attachment",
            format!("orphaned pins at {pins}: {why}"),
            format!(
                "meshbpf health --fix removes them (so does meshbpf detach {})",
                dir.interface
            ),
        ),
        Ok(Liveness::Unknown(why)) => Check::warn(
            "attachment",
            format!("{pins}: {why}"),
            format!(
                "run meshbpf health in the interface's network namespace; if the interface is gone, meshbpf detach {} removes the pins",
                dir.interface
            ),
        ),
        Err(err) => Check::fail(
            "attachment",
            format!("cannot inspect {pins}: {err:#}"),
            format!("meshbpf detach {} removes its pins", dir.interface),
        ),
    };
    check.about(&dir.interface, &dir.program)
}

/// State checks; a state that cannot be read at all is a failed check too.
pub fn checks(root: &StateRoot, max_drop_percent: u8) -> Vec<Check> {
    // Without a bpffs there are no pins; the bpffs check says so.
    if !bpffs::is_on_bpffs(root.path()) {
        return Vec::new();
    }
    read_checks(root, max_drop_percent).unwrap_or_else(|err| {
        vec![Check::fail(
            "attachments",
            format!(
                "cannot read meshbpf's state under {}: {err:#}",
                root.path().display()
            ),
            "run meshbpf health as root (or with CAP_SYS_ADMIN and CAP_BPF)",
        )]
    })
}

fn read_checks(root: &StateRoot, max_drop_percent: u8) -> Result<Vec<Check>> {
    let _lock = root.lock_shared()?;
    let mut checks = Vec::new();
    for interface in root.interfaces()? {
        let dirs = root.program_dirs(&interface)?;
        if dirs.is_empty() {
            checks.push(empty_interface_dir(root, &interface));
            continue;
        }
        let leftovers = match interface::leftovers(root, &interface) {
            Ok(found) => found,
            Err(err) => {
                checks.push(
                    Check::fail(
                        "attachment",
                        format!("cannot compare the pins of {interface} with the kernel: {err:#}"),
                        format!("meshbpf detach {interface} removes its pins"),
                    )
                    .about(&interface, ""),
                );
                continue;
            }
        };
        for leftover in &leftovers {
            checks.push(
                Check::fail("attachment", leftover.describe(), leftover.hint())
                    .about(&interface, &leftover.dir.program),
            );
        }
        for dir in dirs
            .iter()
            .filter(|d| !leftovers.iter().any(|l| l.dir.path == d.path))
        {
            let live = liveness(dir, &dirs);
            checks.push(attachment_check(dir, &live));
            if let Ok(Liveness::Attached(_) | Liveness::Elsewhere(_)) = live {
                checks.extend(tables(dir, max_drop_percent));
            }
        }
    }
    for program in programs::ALL.iter().filter(|p| p.scope == Scope::Host) {
        let dir = root.host_attachment(program.name);
        if let (true, Some(health)) = (dir.exists(), program.health) {
            checks.extend(health(&dir, max_drop_percent)?);
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "attachments",
            format!("no meshbpf attachments under {}", root.path().display()),
        ));
    }
    Ok(checks)
}

fn tables(dir: &AttachmentDir, max_drop_percent: u8) -> Vec<Check> {
    let read = match programs::find(&dir.program).and_then(|p| p.health) {
        Some(health) => health(dir, max_drop_percent),
        None => Ok(Vec::new()),
    };
    read.unwrap_or_else(|err| {
        vec![Check::fail(
            "tables",
            format!(
                "cannot read the maps pinned at {}: {err:#}",
                dir.path.display()
            ),
            format!("detach and attach {} again", dir.interface),
        )]
    })
    .into_iter()
    .map(|c| c.about(&dir.interface, &dir.program))
    .collect()
}

/// Removes every provably orphaned directory, under the exclusive lock, so
/// no command is half-way through making one.
pub fn remove_orphans(root: &StateRoot) -> Result<Vec<Fix>> {
    if !root.path().is_dir() || !bpffs::is_on_bpffs(root.path()) {
        return Ok(Vec::new());
    }
    let _lock = root.lock()?;
    let mut fixes = Vec::new();
    for interface in root.interfaces()? {
        // What the next command would finish or undo first.
        match interface::reconcile(root, &interface) {
            Ok(done) => fixes.extend(done.into_iter().map(|(action, d)| Fix::of(action, Ok(d)))),
            Err(err) => fixes.push(Fix::of(
                "finish_interrupted",
                Err(err.context(format!(
                    "settling what an interrupted command left on {interface}"
                ))),
            )),
        }
        let dirs = root.program_dirs(&interface)?;
        // Decide for all before removing any: a clsact directory is judged
        // by its XDP sibling.
        let orphans: Vec<(&AttachmentDir, String)> = dirs
            .iter()
            .filter_map(|dir| match liveness(dir, &dirs) {
                Ok(Liveness::Orphaned(why)) => Some((dir, why)),
                _ => None,
            })
            .collect();
        for (dir, why) in orphans {
            let removed = dir.remove().map(|()| {
                format!(
                    "removed the orphaned pins of {} on {} at {} ({why})",
                    dir.program,
                    dir.interface,
                    dir.path.display()
                )
            });
            fixes.push(Fix::of("remove_orphan", removed));
        }
        // Removing a program directory removes its emptied parent; one that
        // never held any is left for here.
        let path = root.interface_dir(&interface);
        if path.is_dir() && root.program_dirs(&interface)?.is_empty() {
            let removed = fs::remove_dir(&path)
                .map(|()| format!("removed the empty directory {}", path.display()))
                .with_context(|| format!("removing {}", path.display()));
            fixes.push(Fix::of("remove_orphan", removed));
        }
    }
    Ok(fixes)
}

/// An interface directory without a program directory: an attach killed
/// right after creating it, or a detach killed before removing it.
fn empty_interface_dir(root: &StateRoot, interface: &str) -> Check {
    Check::warn(
        "attachment",
        format!(
            "empty directory {}: an attach or detach of {interface} was interrupted before it held any pins",
            root.interface_dir(interface).display()
        ),
        "meshbpf health --fix removes it; nothing of meshbpf's runs on it",
    )
    .about(interface, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;

    #[test]
    fn a_directory_without_a_link_is_orphaned() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().to_path_buf());
        let leftover = root.attachment("eth0", "xdp_counter");
        leftover.create().unwrap();
        let live = liveness(&leftover, std::slice::from_ref(&leftover)).unwrap();
        assert!(matches!(live, Liveness::Orphaned(_)), "{live:?}");
        let check = attachment_check(&leftover, &Ok(live));
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.detail.starts_with("orphaned pins at "),
            "{}",
            check.detail
        );
    }
}
