//! What killed host-wide attaches and detaches left (see state::host): each
//! named with the programs that still run, and cleared by `--fix`, links
//! first, so that nothing keeps running host-wide.

use anyhow::Result;

use crate::health::{Check, Fix};
use crate::kernel::bpffs;
use crate::kernel::pins::StateRoot;
use crate::state::host::{self, Leftover};

fn check(leftover: &Leftover) -> Check {
    Check::fail(leftover.program, leftover.describe(), leftover.hint())
}

/// One failed check per leftover; none without a bpffs (nothing is pinned).
pub fn checks(root: &StateRoot) -> Vec<Check> {
    if !bpffs::is_on_bpffs(root.path()) {
        return Vec::new();
    }
    match host::leftovers(root) {
        Ok(found) => found.iter().map(check).collect(),
        Err(err) => vec![Check::fail(
            "host",
            format!(
                "cannot read the host-wide attachments under {}: {err:#}",
                root.path().display()
            ),
            "run meshbpf health as root (or with CAP_SYS_ADMIN and CAP_BPF)",
        )],
    }
}

/// Finishes every interrupted detach and removes every interrupted attach.
pub fn fix(root: &StateRoot) -> Result<Vec<Fix>> {
    if !root.path().is_dir() || !bpffs::is_on_bpffs(root.path()) {
        return Ok(Vec::new());
    }
    Ok(host::clear_leftovers(root)?
        .into_iter()
        .map(|(leftover, result)| {
            let done = result.map(|()| format!("cleared the {}", leftover.describe()));
            Fix::of("clear_host_leftover", done)
        })
        .collect())
}
