//! `meshbpf list`: everything meshbpf manages, read from the pins and the
//! kernel: its own attachments and loaded objects, their programs (ids,
//! types, attach points and methods), maps (entries and capacity) and pins.

use anyhow::Result;
use serde::Serialize;

use crate::inventory::{self, Object, ObjectKind};
use crate::kernel::caps;
use crate::kernel::pins::StateRoot;
use crate::output::{self, Output, Report};

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
            .map(render_object)
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// An object's title, its programs with their attachments, and its maps.
pub fn render_object(object: &Object) -> String {
    let title = match object.kind {
        ObjectKind::Attachment => format!(
            "{} on {} · {}",
            object.name,
            object.interface.as_deref().unwrap_or("?"),
            object.pin_path
        ),
        ObjectKind::Loaded => format!(
            "loaded object {} · {} · from {}",
            object.name,
            object.pin_path,
            object.file.as_deref().unwrap_or("?")
        ),
    };
    let globals: String = object
        .globals
        .iter()
        .map(|(name, value)| format!("\nset {name} = {value}"))
        .collect();
    let mut programs = output::table(&[
        "program",
        "section",
        "type",
        "prog id",
        "attached to",
        "method",
        "state",
        "link id",
    ]);
    for p in &object.programs {
        let section = p.section.as_deref().unwrap_or("-");
        let id = output::right(p.prog_id);
        if p.attachments.is_empty() {
            programs.add_row(vec![
                p.name.as_str().into(),
                section.into(),
                p.prog_type.as_str().into(),
                id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for a in &p.attachments {
            programs.add_row(vec![
                p.name.as_str().into(),
                section.into(),
                p.prog_type.as_str().into(),
                id.clone(),
                a.attach_point.as_str().into(),
                a.method.as_str().into(),
                format!("{:?}", a.state).to_lowercase().into(),
                output::right(a.link_id.map_or("-".into(), |l| l.to_string())),
            ]);
        }
    }
    let mut text = format!("{title}{globals}\n{programs}");
    if !object.maps.is_empty() {
        let mut maps = output::table(&[
            "map",
            "type",
            "map id",
            "entries",
            "max entries",
            "pinned at",
        ]);
        for m in &object.maps {
            maps.add_row(vec![
                m.name.as_str().into(),
                m.map_type.as_str().into(),
                output::right(m.map_id),
                output::right(m.entries.map_or("-".into(), output::count)),
                output::right(output::count(m.max_entries.into())),
                m.pin_path.as_deref().unwrap_or("-").into(),
            ]);
        }
        text.push_str(&format!("\n{maps}"));
    }
    text
}

pub fn run(root: &StateRoot, out: &Output) -> Result<()> {
    caps::require("list", &[caps::BPF])?;
    let lock = root.lock_shared()?;
    let objects = match lock {
        Some(_) => inventory::all(root)?,
        None => Vec::new(),
    };
    out.emit(&ListReport {
        objects,
        root: root.path().display().to_string(),
    })?;
    Ok(())
}
