//! One module per subcommand; each takes its parsed arguments, does the work
//! through the library (`state`, `programs`, `kernel`), and hands a report
//! to `output`. The commands are leaves: which one runs is decided here,
//! from the typed command line, and none calls another.

use anyhow::Result;

use crate::cli::{
    AttachTarget, Cli, Command, DetachTarget, FilterCommand, FilterCountersCommand, LsmCommand,
};
use crate::kernel::pins::StateRoot;
use crate::output::Output;
use crate::state::saved_rules::SavedRules;

pub mod attach;
pub mod attach_object;
pub mod capture;
pub mod completions;
pub mod detach;
pub mod events;
pub mod filter;
pub mod filter_ban;
pub mod filter_confirm;
pub mod filter_show;
pub mod flows;
pub mod health;
pub mod latency;
pub mod list;
pub mod load;
pub mod lsm;
pub mod lsm_monitor;
pub mod man;
pub mod serve;
pub mod stats;
pub mod unload;

pub fn run(cli: Cli, out: &Output) -> Result<()> {
    let root = StateRoot::new(cli.global.bpffs);
    let saved = SavedRules::new(&cli.global.state_dir);
    match cli.command {
        Command::Attach(AttachTarget::Interface(args)) => attach::run(&root, &saved, out, &args),
        Command::Attach(AttachTarget::Latency(args)) => latency::attach(&root, out, &args),
        Command::Attach(AttachTarget::Lsm(args)) => lsm_monitor::attach(&root, out, &args),
        Command::Attach(AttachTarget::Object(args)) => attach_object::run(&root, out, &args),
        Command::Detach(DetachTarget::Interface(interface)) => detach::run(&root, out, &interface),
        Command::Detach(DetachTarget::Latency) => latency::detach(&root, out),
        Command::Detach(DetachTarget::Lsm) => lsm_monitor::detach(&root, out),
        Command::Stats(args) => stats::run(&root, out, &args),
        Command::Filter(command) => match command {
            FilterCommand::Apply(args) => filter::apply(&root, &saved, out, &args),
            FilterCommand::Diff(args) => filter::diff(&root, out, &args),
            FilterCommand::Check(args) => filter::check(out, &args),
            FilterCommand::Remove(args) => filter::remove(&root, &saved, out, &args),
            FilterCommand::Confirm(args) => filter_confirm::confirm(&root, &saved, out, &args),
            FilterCommand::Rollback(args) => filter_confirm::rollback(&root, &saved, out, &args),
            FilterCommand::Show(args) => filter_show::show(&root, out, &args),
            FilterCommand::Counters(FilterCountersCommand::Reset(args)) => {
                filter_show::reset(&root, out, &args)
            }
            FilterCommand::Ban(args) => filter_ban::run(&root, out, &args),
        },
        Command::Flows(args) => flows::run(&root, out, &args),
        Command::Health(args) => health::run(&root, out, &args),
        Command::Load(args) => load::run(&root, out, &args),
        Command::Unload(args) => unload::run(&root, out, &args),
        Command::List => list::run(&root, out),
        Command::Latency(args) => latency::run(&root, out, &args),
        Command::Events(args) => events::run(&root, out, &args),
        Command::Capture(args) => capture::run(&root, out, &args),
        Command::Lsm(LsmCommand::Check(args)) => lsm::check(&root, out, &args),
        Command::Lsm(LsmCommand::Apply(args)) => lsm_monitor::apply(&root, out, &args),
        Command::Serve(args) => serve::run(&root, &args),
        Command::Completions(args) => completions::run(out, &args),
        Command::Man(args) => man::run(out, &args),
    }
}
