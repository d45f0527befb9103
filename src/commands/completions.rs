//! `meshbpf completions SHELL`: completion scripts from the clap definition.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::output::Output;

pub fn run(out: &Output, args: &CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "meshbpf", &mut script);
    out.text(&String::from_utf8_lossy(&script))?;
    Ok(())
}
