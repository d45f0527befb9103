//! Loaded objects' state: what a killed load or unload left in `loaded/`,
//! named with the programs that still run, and swept by `--fix`.

use anyhow::Result;

use crate::health::{Check, Fix};
use crate::kernel::bpffs;
use crate::kernel::pins::StateRoot;
use crate::programs::loaded::{self, Interrupted, Transient};

fn hint(transient: &Transient) -> String {
    let name = &transient.dir.name;
    match transient.interrupted {
        Interrupted::Load => format!(
            "meshbpf health --fix removes it; meshbpf load FILE --name {name} loads it again"
        ),
        Interrupted::Unload => {
            format!("meshbpf unload {name} or meshbpf health --fix finishes the unload")
        }
    }
}

fn read_checks(root: &StateRoot) -> Result<Vec<Check>> {
    let _lock = root.lock_shared()?;
    let mut checks = Vec::new();
    for transient in loaded::transients(root)? {
        checks.push(Check::fail(
            "loaded",
            transient.describe(root)?,
            hint(&transient),
        ));
    }
    Ok(checks)
}

/// One failed check per leftover directory; none without a bpffs.
pub fn checks(root: &StateRoot) -> Vec<Check> {
    if !bpffs::is_on_bpffs(root.path()) {
        return Vec::new();
    }
    read_checks(root).unwrap_or_else(|err| {
        vec![Check::fail(
            "loaded",
            format!(
                "cannot read the loaded objects under {}: {err:#}",
                root.path().display()
            ),
            "run meshbpf health as root (or with CAP_SYS_ADMIN and CAP_BPF)",
        )]
    })
}

/// Removes every leftover of a killed load, finishes every killed unload.
pub fn fix(root: &StateRoot) -> Result<Vec<Fix>> {
    if !root.path().is_dir() || !bpffs::is_on_bpffs(root.path()) {
        return Ok(Vec::new());
    }
    let _lock = root.lock()?;
    let mut fixes = Vec::new();
    for transient in loaded::transients(root)? {
        let done = transient.describe(root).and_then(|what| {
            transient.remove(root)?;
            Ok(format!("cleared the {what}"))
        });
        fixes.push(Fix::of("clear_loaded_leftover", done));
    }
    Ok(fixes)
}
