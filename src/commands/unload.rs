//! `meshbpf unload NAME`: detach every attachment of a loaded object, then
//! remove its programs, maps and pins.

use anyhow::Result;
use serde::Serialize;

use crate::cli::UnloadArgs;
use crate::error::Failure;
use crate::inventory::{self, Object};
use crate::kernel::pins::StateRoot;
use crate::kernel::{bpffs, caps};
use crate::output::{Output, Report};
use crate::programs::loaded::{self, LoadedDir};

#[derive(Debug, Serialize)]
struct UnloadReport {
    status: &'static str,
    /// The object as it was just before.
    #[serde(flatten)]
    object: Object,
}

impl Report for UnloadReport {
    fn render(&self) -> String {
        let detached: usize = self
            .object
            .programs
            .iter()
            .map(|p| p.attachments.len())
            .sum();
        format!(
            "unloaded {}: detached {detached} attachments, removed {} programs; it was:\n{}",
            self.object.name,
            self.object.programs.len(),
            self.object.render()
        )
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &UnloadArgs) -> Result<()> {
    loaded::check_name(&args.name)?;
    caps::require("unload", &[caps::BPF, caps::NET_ADMIN])?;
    let dir = LoadedDir::new(root, &args.name);
    // Without a bpffs under the root nothing can be loaded.
    let lock = if bpffs::is_on_bpffs(root.path()) {
        Some(root.lock()?)
    } else {
        None
    };
    if lock.is_none() || !dir.exists() {
        return Err(
            Failure::new(format!("no object named '{}' is loaded", args.name))
                .hint("`meshbpf list` shows the loaded objects")
                .into(),
        );
    }
    loaded::sweep(root)?;
    let object = inventory::loaded_object(root, &dir)?;
    loaded::unload(root, &dir)?;
    out.emit(&UnloadReport {
        status: "unloaded",
        object,
    })?;
    Ok(())
}
