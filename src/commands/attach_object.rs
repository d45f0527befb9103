//! `meshbpf attach [TARGET] --object NAME [--prog PROG]`: the branch of
//! attach for programs of loaded objects.

use anyhow::Result;
use serde::Serialize;

use crate::cli::ObjectArgs;
use crate::error::Failure;
use crate::kernel::bpffs;
use crate::kernel::links::Hooked;
use crate::kernel::pins::StateRoot;
use crate::output::{Output, Report};
use crate::programs::loaded;
use crate::programs::loaded::attach::{self, Outcome, Request};

#[derive(Debug, Serialize)]
struct AttachObjectReport {
    status: Outcome,
    object: String,
    program: String,
    section: String,
    #[serde(flatten)]
    hooked: Hooked,
    pin_path: String,
}

impl Report for AttachObjectReport {
    fn render(&self) -> String {
        let h = &self.hooked;
        let what = format!("{}:{} ({})", self.object, self.program, self.section);
        let ids = format!("prog id {}, link id {}", h.prog_id, h.link_id);
        match self.status {
            Outcome::Attached => format!(
                "attached {what} to {} as {} ({ids}); pinned at {}",
                h.attach_point, h.method, self.pin_path
            ),
            Outcome::AlreadyAttached => format!(
                "{what} is already attached to {} as {} ({ids}); nothing changed",
                h.attach_point, h.method
            ),
        }
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &ObjectArgs) -> Result<()> {
    let object = args.object.as_str();
    loaded::check_name(object)?;
    if !bpffs::is_on_bpffs(root.path()) {
        return Err(Failure::new(format!("no object named '{object}' is loaded"))
            .hint(format!(
                "no bpffs holds {}; load the object first (meshbpf load FILE.bpf.o --name {object})",
                root.path().display()
            ))
            .into());
    }
    let _lock = root.lock()?;
    let done = attach::attach(
        root,
        &Request {
            object,
            program: args.prog.as_deref(),
            target: args.target.as_deref(),
            mode: args.mode,
        },
    )?;
    if let Some(path) = &done.mounted_tracefs {
        out.note(&format!("mounted tracefs at {}", path.display()));
    }
    out.emit(&AttachObjectReport {
        status: done.outcome,
        object: object.to_string(),
        program: done.program.name,
        section: done.program.section,
        hooked: done.hooked,
        pin_path: done.pin_path.display().to_string(),
    })?;
    Ok(())
}
