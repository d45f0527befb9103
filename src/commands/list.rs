//! `meshbpf list`: everything meshbpf manages, read from the pins and the
//! kernel: its own attachments and loaded objects, their programs (ids,
//! types, attach points and methods), maps (entries and capacity) and pins.

use anyhow::Result;
use serde::Serialize;

use crate::inventory::{self, Object};
use crate::kernel::caps;
use crate::kernel::pins::StateRoot;
use crate::output::{Output, Report};

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct ListReport {
    objects: Vec<Object>,
    #[serde(skip)]
    root: String,
}

impl Report for ListReport {
    fn render(&self) -> String {
        if self.objects.is_empty() {
            return format!(
                "nothing of meshbpf's is attached or loaded under {}",
                self.root
            );
        }
        self.objects
            .iter()
            .map(Object::render)
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

pub fn run(root: &StateRoot, out: &Output) -> Result<()> {
    caps::require("list", &[caps::BPF])?;
    // Released before the output is written: a reader stalled on a pipe
    // must not hold up attach, detach or health --fix.
    let objects = match root.lock_shared()? {
        Some(_lock) => inventory::all(root)?,
        None => Vec::new(),
    };
    out.emit(&ListReport {
        objects,
        root: root.path().display().to_string(),
    })?;
    Ok(())
}
