use std::process::ExitCode;

use clap::Parser;

use meshbpf::cli::Cli;
use meshbpf::error::{Interrupted, Reported};
use meshbpf::output::Output;
use meshbpf::{commands, kernel};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    env_logger::Builder::new()
        .filter_level(match cli.global.verbose {
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            2 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        })
        .format_timestamp(None)
        .init();
    kernel::verifier::install();

    let out = Output::new(cli.global.json, cli.global.pretty);
    match commands::run(cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<Interrupted>().is_some() => ExitCode::from(EXIT_INTERRUPTED),
        Err(err) if err.downcast_ref::<Reported>().is_some() => ExitCode::from(EXIT_FAILURE),
        Err(err) => {
            out.error(&err);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Clap's own errors, as JSON when the command line asked for JSON.
fn usage_error(err: clap::Error) -> ExitCode {
    if !err.use_stderr() {
        // --help and --version.
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let wants_json = std::env::args().skip(1).take_while(|a| a != "--").any(|a| {
        a == "--json"
            || a == "--pretty"
            || (a.starts_with('-') && !a.starts_with("--") && a.contains(['j', 'p']))
    });
    if wants_json {
        let rendered = err.render().to_string();
        // The first paragraph: a message that ends in ':' goes on with the
        // indented names it is about (missing arguments, say).
        let message = rendered
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let message = message.trim_start_matches("error: ");
        let out = Output::new(true, false);
        out.error(&anyhow::anyhow!("{message}"));
    } else {
        let _ = err.print();
    }
    ExitCode::from(EXIT_USAGE)
}
