//! `meshbpf load FILE.bpf.o`: validate, load and pin an object, all or
//! nothing.

use anyhow::Result;
use serde::Serialize;

use crate::cli::LoadArgs;
use crate::error::Failure;
use crate::inventory::{self, Object};
use crate::kernel::pins::StateRoot;
use crate::kernel::{bpffs, caps};
use crate::output::{Output, Report};
use crate::programs::loaded::{self, LoadRequest, LoadedDir};

#[derive(Debug, Serialize)]
struct LoadReport {
    status: &'static str,
    #[serde(flatten)]
    object: Object,
}

impl Report for LoadReport {
    fn render(&self) -> String {
        format!(
            "loaded {} ({} programs, {} maps)\n{}",
            self.object.name,
            self.object.programs.len(),
            self.object.maps.len(),
            self.object.render()
        )
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &LoadArgs) -> Result<()> {
    let name = match &args.name {
        Some(name) => {
            loaded::check_name(name)?;
            name.clone()
        }
        None => loaded::default_name(&args.file),
    };
    // A bad file must fail before anything touches the kernel.
    let bytes = loaded::read_object(&args.file)?;
    caps::require("load", &[caps::BPF])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    let _lock = root.lock()?;
    loaded::sweep(root)?;
    let existing = LoadedDir::new(root, &name);
    if existing.exists() {
        return Err(Failure::new(format!(
            "duplicate NAME: an object named '{name}' is already loaded ({})",
            existing.path.display()
        ))
        .hint(format!(
            "unload it first (meshbpf unload {name}), or load this one under another --name"
        ))
        .into());
    }
    let request = LoadRequest {
        file: &args.file,
        name: &name,
        pin_maps: args.pin_maps,
        globals: &args.set,
        log: args.log.as_deref(),
        btf: args.btf.as_deref(),
    };
    let dir = loaded::load(root, &request, &bytes)?;
    out.emit(&LoadReport {
        status: "loaded",
        object: inventory::loaded_object(root, &dir)?,
    })?;
    Ok(())
}
