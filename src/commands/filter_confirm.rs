//! `meshbpf filter confirm|rollback`: settling an `apply --confirm`, or
//! finishing what a killed settle (or the kernel's timer) left.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::cli::FilterShowArgs;
use crate::error::Failure;
use crate::kernel::pins::StateRoot;
use crate::kernel::{caps, netdev};
use crate::output::{Output, Report};
use crate::programs::xdp_mesh_filter::{self, confirm, PinnedMaps};
use crate::state::saved_rules::{self, SavedRules};
use crate::state::{self, filter};

#[derive(Debug, Serialize)]
struct SettleReport {
    interface: String,
    /// confirmed or rolled_back.
    state: &'static str,
    /// True when an earlier command (or the timer) had settled it so, and
    /// this one only finished what it left.
    already: bool,
    /// The generation in force now.
    generation: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_to: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Report for SettleReport {
    fn render(&self) -> String {
        let already = if self.already {
            " (it already was)"
        } else {
            ""
        };
        let mut text = match self.state {
            "confirmed" => format!(
                "{}: the applied rule set stays (generation {}){already}; the previous one is freed",
                self.interface, self.generation
            ),
            _ => format!(
                "{}: the previous rule set is back (generation {}){already}",
                self.interface, self.generation
            ),
        };
        if let Some(path) = &self.saved_to {
            text.push_str(&format!("; saved for boot in {}", path.display()));
        }
        for w in &self.warnings {
            text.push_str(&format!("\nwarning: {w}"));
        }
        text
    }
}

/// How `filter confirm` and `filter rollback` settle a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Confirm,
    Rollback,
}

impl Settle {
    fn state(self) -> &'static str {
        match self {
            Settle::Confirm => "confirmed",
            Settle::Rollback => "rolled_back",
        }
    }
}

pub fn confirm(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    args: &FilterShowArgs,
) -> Result<()> {
    settle(root, saved, out, &args.interface, Settle::Confirm)
}

pub fn rollback(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    args: &FilterShowArgs,
) -> Result<()> {
    settle(root, saved, out, &args.interface, Settle::Rollback)
}

/// Settles a pending confirmation, or finishes one that is settled the
/// same way already (a re-run after a kill, or a rollback the timer made):
/// freeing the generation that lost, and moving the file for boot.
fn settle(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    interface: &str,
    how: Settle,
) -> Result<()> {
    netdev::validate_name(interface)?;
    caps::require("filter confirm", &[caps::BPF])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, interface)?;
    let dir = filter::filter_dir(root, interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let maps = pinned.maps();
    let control = confirm::control(&dir)?;
    let won = match how {
        Settle::Confirm => confirm::confirm(control.as_fd())?,
        Settle::Rollback => confirm::roll_back(control.as_fd())?,
    };
    let last = confirm::read(&maps)?;
    if !won && last.as_ref().map(|c| c.state) != Some(how.state()) {
        let verb = match how {
            Settle::Confirm => "confirm",
            Settle::Rollback => "roll back",
        };
        let last = match last {
            Some(c) => match c.settled_at {
                Some(at) => format!("the last one was {} at {at}", c.state.replace('_', " ")),
                None => format!("the last one is {}", c.state),
            },
            None => "no apply --confirm was made on it".into(),
        };
        return Err(Failure::new(format!(
            "nothing to {verb} on {interface}: no confirmation is pending ({last})"
        ))
        .hint(format!(
            "see the rule set in force with: meshbpf filter show {interface}"
        ))
        .into());
    }
    xdp_mesh_filter::free_previous(&maps)?;
    let mut warnings = Vec::new();
    let saved_to = match how {
        Settle::Confirm => saved
            .promote(interface)
            .map_err(|err| warnings.push(saved_rules::not_saved(&err)))
            .ok()
            .flatten(),
        Settle::Rollback => {
            if let Err(err) = saved.discard(interface) {
                warnings.push(format!("{err:#}"));
            }
            None
        }
    };
    out.emit(&SettleReport {
        interface: interface.to_owned(),
        state: how.state(),
        already: !won,
        generation: xdp_mesh_filter::active_generation(&maps)?,
        saved_to,
        warnings,
    })?;
    Ok(())
}
