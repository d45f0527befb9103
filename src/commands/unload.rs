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
    /// "unloaded", or "finished" for the rest of an unload that was killed.
    status: &'static str,
    /// The object's name when nothing more of it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// The object as it was just before; what was left of it when a killed
    /// unload is finished, none when too little was left to read.
    #[serde(flatten)]
    object: Option<Object>,
}

impl Report for UnloadReport {
    fn render(&self) -> String {
        let Some(object) = &self.object else {
            let name = self.name.as_deref().unwrap_or_default();
            return format!("finished the interrupted unload of {name}");
        };
        let detached: usize = object.programs.iter().map(|p| p.attachments.len()).sum();
        format!(
            "{} {}: detached {detached} attachments, removed {} programs; it was:\n{}",
            self.status,
            object.name,
            object.programs.len(),
            object.render()
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
    // A killed unload of this object is finished, as if it had not been.
    let unfinished = loaded::interrupted_unload(root, &args.name);
    if lock.is_none() || !(dir.exists() || unfinished.is_some()) {
        return Err(
            Failure::new(format!("no object named '{}' is loaded", args.name))
                .hint("`meshbpf list` shows the loaded objects")
                .into(),
        );
    }
    let (status, object) = match &unfinished {
        Some(transient) if !dir.exists() => (
            "finished",
            inventory::loaded_object(root, &transient.dir).ok(),
        ),
        _ => ("unloaded", Some(inventory::loaded_object(root, &dir)?)),
    };
    loaded::sweep(root)?;
    if dir.exists() {
        loaded::unload(root, &dir)?;
    }
    out.emit(&UnloadReport {
        status,
        name: object.is_none().then(|| args.name.clone()),
        object,
    })?;
    Ok(())
}
