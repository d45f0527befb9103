//! `meshbpf man DIR`: roff man pages from the clap definition, one for the
//! tool and one per subcommand (meshbpf-attach.1, ...).

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{Cli, ManArgs};
use crate::output::{Output, Report};

#[derive(Debug, Serialize)]
struct ManReport {
    written: Vec<String>,
}

impl Report for ManReport {
    fn render(&self) -> String {
        self.written
            .iter()
            .map(|p| format!("wrote {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn run(out: &Output, args: &ManArgs) -> Result<()> {
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let root = Cli::command();
    let mut written = vec![write_page(&args.dir, "meshbpf".into(), root.clone())?];
    for sub in root.get_subcommands() {
        let name = format!("meshbpf-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        written.push(write_page(&args.dir, name, page)?);
    }
    out.emit(&ManReport { written })?;
    Ok(())
}

fn write_page(dir: &std::path::Path, name: String, command: clap::Command) -> Result<String> {
    let path: PathBuf = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}
