//! meshbpf's own state: every pin directory under the root must belong to a
//! live attachment, tables should have room, and filters should not drop
//! most of what they judge. `--fix` removes what is provably orphaned: a
//! directory whose link no longer runs, whose interface is gone, or that an
//! interrupted command left without a link. Nothing else is touched.

use std::os::fd::AsFd;

use anyhow::Result;
use libbpf_rs::MapCore;

use crate::health::{Check, Fix};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::tc;
use crate::kernel::{bpffs, bpfobj, netdev};
use crate::programs::maps;
use crate::programs::tc_classifier::{self, FlowTable};
use crate::programs::xdp_mesh_filter::{self, FilterCounters, PinnedMaps};
use crate::programs::{lsm_monitor, syscall_latency};
use crate::proto::Direction;
use crate::state::{self, LinkState};

/// A table this full is about to evict, or to refuse, entries.
const NEAR_FULL_PERCENT: f64 = 90.0;

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
        if tc::netlink_prog_id(prog.as_fd(), &iface, Direction::Ingress) == Some(id) {
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
        for dir in &dirs {
            let live = liveness(dir, &dirs);
            checks.push(attachment_check(dir, &live));
            if let Ok(Liveness::Attached(_) | Liveness::Elsewhere(_)) = live {
                checks.extend(tables(dir, max_drop_percent));
            }
        }
    }
    let latency = root.host_attachment(syscall_latency::PROGRAM);
    if latency.exists() {
        checks.push(latency_check(&latency));
    }
    let lsm = root.host_attachment(lsm_monitor::PROGRAM);
    if lsm.exists() {
        checks.push(lsm_check(&lsm));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "attachments",
            format!("no meshbpf attachments under {}", root.path().display()),
        ));
    }
    Ok(checks)
}

/// Pins of a host-wide attachment whose attach (with `flag`) never
/// committed.
fn orphaned(program: &'static str, dir: &AttachmentDir, flag: &str, hint: &str) -> Check {
    Check::fail(
        program,
        format!(
            "orphaned pins at {}: an attach {flag} was interrupted before it committed",
            dir.path.display()
        ),
        hint,
    )
}

/// The host-wide syscall_latency attachment, and the method it runs with.
fn latency_check(dir: &AttachmentDir) -> Check {
    let hint = "meshbpf detach --latency removes it; meshbpf attach --latency attaches again";
    if !dir.is_committed() {
        return orphaned(syscall_latency::PROGRAM, dir, "--latency", hint);
    }
    match syscall_latency::inspect(dir) {
        Ok(a) => Check::ok(
            syscall_latency::PROGRAM,
            format!(
                "attached with {} (links {} and {}), since {}",
                a.method.as_str(),
                a.link_ids[0],
                a.link_ids[1],
                a.attached_at
            ),
        ),
        Err(err) => Check::fail(
            syscall_latency::PROGRAM,
            format!("cannot inspect {}: {err:#}", dir.path.display()),
            hint,
        ),
    }
}

/// The host-wide lsm_monitor: its mode and method, and whether the ring
/// buffer lost events.
fn lsm_check(dir: &AttachmentDir) -> Check {
    let hint = "meshbpf detach --lsm removes it; meshbpf attach --lsm attaches again";
    if !dir.is_committed() {
        return orphaned(lsm_monitor::PROGRAM, dir, "--lsm", hint);
    }
    let stats = match lsm_monitor::stats(dir) {
        Ok(stats) => stats,
        Err(err) => {
            return Check::fail(
                lsm_monitor::PROGRAM,
                format!("cannot inspect {}: {err:#}", dir.path.display()),
                hint,
            )
        }
    };
    let a = &stats.attachment;
    let detail = format!(
        "{} mode with {} (links {}), since {}",
        a.mode.as_str(),
        a.method.as_str(),
        a.link_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        a.attached_at
    );
    if stats.lost_total > 0 {
        return Check::warn(
            lsm_monitor::PROGRAM,
            format!(
                "{detail}; {} events were lost: the ring buffer was full",
                stats.lost_total
            ),
            "read events more often (meshbpf events --follow keeps up), or watch fewer paths",
        );
    }
    Check::ok(lsm_monitor::PROGRAM, detail)
}

fn tables(dir: &AttachmentDir, max_drop_percent: u8) -> Vec<Check> {
    let read = match dir.program.as_str() {
        tc_classifier::PROGRAM => tc_classifier::inspect(dir).map(|t| vec![flow_table(&t)]),
        xdp_mesh_filter::PROGRAM => filter_tables(dir, max_drop_percent),
        _ => Ok(Vec::new()),
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

fn fullness(
    name: &'static str,
    what: &str,
    used: u64,
    capacity: u64,
    consequence: &str,
    hint: &str,
) -> Check {
    let percent = used as f64 * 100.0 / capacity.max(1) as f64;
    let detail = format!("{used} of {capacity} {what} ({percent:.0}%)");
    if percent >= NEAR_FULL_PERCENT {
        Check::warn(
            name,
            format!("{detail}: near capacity, {consequence}"),
            hint,
        )
    } else {
        Check::ok(name, detail)
    }
}

/// An LRU table that evicted has been full, even when it reads a little
/// below its size (the kernel keeps per-CPU free lists).
fn flow_table(t: &FlowTable) -> Check {
    const HINT: &str = "detach, then attach again with a larger --max-flows";
    let check = fullness(
        "flow_table",
        "flows",
        t.flows as u64,
        u64::from(t.max_flows),
        "so the least recently used flows are evicted",
        HINT,
    );
    if t.evictions == 0 {
        return check;
    }
    let detail = format!(
        "{}; {} flows evicted since attach: the table has been full",
        check.detail, t.evictions
    );
    Check::warn("flow_table", detail, HINT)
}

fn filter_tables(dir: &AttachmentDir, max_drop_percent: u8) -> Result<Vec<Check>> {
    let pinned = PinnedMaps::open(dir)?;
    let maps = pinned.maps();
    let rules = xdp_mesh_filter::read_rules(&maps)?.rules.len() as u64;
    let limiters = maps::open_pinned_map(dir, xdp_mesh_filter::LIMITERS_MAP)?;
    let sources = limiters.keys().count() as u64;
    Ok(vec![
        fullness(
            "filter_rules",
            "rules",
            rules,
            u64::from(xdp_mesh_filter::MAX_RULES),
            "so a larger rule set will be refused",
            "merge rules that share an action (a rule takes a list of CIDRs)",
        ),
        fullness(
            "limiter_table",
            "rate-limited sources",
            sources,
            u64::from(limiters.max_entries()),
            "so the least recently seen sources are forgotten and get a fresh burst",
            "a source set this large is better limited by CIDR rules",
        ),
        drop_rate(
            &xdp_mesh_filter::read_stats(&maps)?,
            max_drop_percent,
            &dir.interface,
        ),
    ])
}

fn drop_rate(counters: &FilterCounters, max_percent: u8, interface: &str) -> Check {
    let (pass, drop) = (
        counters.verdicts.pass.packets,
        counters.verdicts.drop.packets,
    );
    let judged = pass + drop;
    if judged == 0 {
        return Check::ok("drop_rate", "no packets judged yet");
    }
    let percent = drop as f64 * 100.0 / judged as f64;
    let detail = format!("dropped {drop} of {judged} packets ({percent:.1}%) since attach");
    if percent > f64::from(max_percent) {
        Check::warn(
            "drop_rate",
            format!("{detail}, more than {max_percent}%"),
            format!("check the rules and the default policy with meshbpf filter show {interface}; --max-drop-percent sets this threshold"),
        )
    } else {
        Check::ok("drop_rate", detail)
    }
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
    }
    Ok(fixes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;
    use crate::programs::xdp_counter::traffic::Counter;
    use crate::programs::xdp_mesh_filter::Verdicts;

    #[test]
    fn tables_warn_from_ninety_percent() {
        let check = |used| fullness("flow_table", "flows", used, 100, "evicting", "grow it");
        assert_eq!(check(89).status, Status::Ok);
        assert_eq!(check(89).detail, "89 of 100 flows (89%)");
        let full = check(90);
        assert_eq!(full.status, Status::Warn);
        assert_eq!(
            full.detail,
            "90 of 100 flows (90%): near capacity, evicting"
        );
        assert_eq!(full.hint.as_deref(), Some("grow it"));
    }

    #[test]
    fn a_flow_table_that_evicted_has_been_full() {
        let table = |flows, evictions| FlowTable {
            program: tc_classifier::PROGRAM,
            method: crate::kernel::tc::TcMethod::Tcx,
            max_flows: 64,
            flows,
            flows_created: flows as u64 + evictions,
            evictions,
            not_ip: 0,
            classes: Vec::new(),
        };
        let roomy = flow_table(&table(10, 0));
        assert_eq!(roomy.status, Status::Ok);
        assert_eq!(roomy.detail, "10 of 64 flows (16%)");
        let evicting = flow_table(&table(55, 144));
        assert_eq!(evicting.status, Status::Warn);
        assert_eq!(
            evicting.detail,
            "55 of 64 flows (86%); 144 flows evicted since attach: the table has been full"
        );
        assert_eq!(flow_table(&table(60, 0)).status, Status::Warn);
    }

    #[test]
    fn the_drop_rate_warns_above_the_threshold() {
        let counters = |pass, drop| FilterCounters {
            verdicts: Verdicts {
                pass: Counter {
                    packets: pass,
                    bytes: 0,
                },
                drop: Counter {
                    packets: drop,
                    bytes: 0,
                },
            },
            ..Default::default()
        };
        assert_eq!(
            drop_rate(&counters(0, 0), 50, "eth0").detail,
            "no packets judged yet"
        );
        let half = drop_rate(&counters(5, 5), 50, "eth0");
        assert_eq!(half.status, Status::Ok);
        let most = drop_rate(&counters(3, 7), 50, "eth0");
        assert_eq!(most.status, Status::Warn);
        assert_eq!(
            most.detail,
            "dropped 7 of 10 packets (70.0%) since attach, more than 50%"
        );
        assert!(most.hint.unwrap().contains("meshbpf filter show eth0"));
    }

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
