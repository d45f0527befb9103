//! `meshbpf lsm ...`: lsm_monitor's policy.

use anyhow::Result;

use crate::cli::LsmCommand;
use crate::commands::lsm_monitor;
use crate::kernel::pins::StateRoot;
use crate::output::Output;

pub fn run(root: &StateRoot, out: &Output, command: &LsmCommand) -> Result<()> {
    match command {
        LsmCommand::Apply(args) => lsm_monitor::apply(root, out, args),
    }
}
