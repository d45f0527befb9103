//! Commit-confirm: an applied rule set that puts the previous one back by
//! itself unless it is confirmed in time.
//!
//! The invariant: while a confirmation is pending, both generations hold
//! whole rule sets, and a timer in the pinned `confirm` map (a bpf_timer,
//! which only a program can arm) will publish the previous one when the
//! window ends. Nothing of it is in a process: the kernel fires the timer
//! whatever happens to meshbpf, its terminal or user space. Arming and
//! publishing the new set are one BPF_PROG_TEST_RUN of `filter_control`,
//! so no kill leaves the new set in force without its way back; confirm,
//! rollback and the timer settle the state with a compare-and-swap, so
//! exactly one of them wins.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::skel::types::{
    filter_confirm, filter_confirm_state, filter_control_command, filter_control_request,
    filter_control_result,
};
use super::FilterMaps;
use crate::error::Failure;
use crate::kernel::bpfobj;
use crate::kernel::clock::{self, BootAnchor};
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::programs::maps::{bytes, lookup};

plain_data!(filter_confirm, filter_control_request);

/// The pin of `filter_control` beside the filter's own program.
pub const CONTROL_PIN: &str = "prog_filter_control";

/// The longest window: long enough for a change window, short enough that
/// a forgotten confirmation does not linger for days.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Opens the control program of an attachment.
pub fn control(dir: &AttachmentDir) -> Result<OwnedFd> {
    let path = dir.pin(CONTROL_PIN);
    if !path.exists() {
        return Err(Failure::new(format!(
            "this filter attachment has no {CONTROL_PIN}: it was attached by a meshbpf without commit-confirm"
        ))
        .hint("re-attach it (meshbpf detach IFACE; meshbpf attach IFACE --filter RULES.json), then apply with --confirm")
        .into());
    }
    bpfobj::open_pinned(&path)
}

fn run(
    control: BorrowedFd<'_>,
    command: filter_control_command,
    request: filter_control_request,
) -> Result<bool> {
    let request = filter_control_request {
        command: command.0,
        ..request
    };
    let result = bpfobj::test_run(control, bytes(&request))?;
    match filter_control_result(result) {
        filter_control_result::FILTER_CONTROL_DONE => Ok(true),
        filter_control_result::FILTER_CONTROL_REFUSED => Ok(false),
        filter_control_result::FILTER_CONTROL_TIMER_FAILED => {
            bail!("the kernel refused to arm the rollback timer (bpf_timer needs Linux 5.15)")
        }
        _ => bail!("filter_control refused the request (result {result})"),
    }
}

/// Arms the rollback and publishes generation `gen` in one step.
pub fn arm(control: BorrowedFd<'_>, gen: u8, window: Duration) -> Result<()> {
    let armed = run(
        control,
        filter_control_command::FILTER_CONTROL_ARM,
        filter_control_request {
            generation: u32::from(gen),
            window_ns: window.as_nanos() as u64,
            ..Default::default()
        },
    )?;
    if !armed {
        bail!("a confirmation is already pending");
    }
    Ok(())
}

/// Keeps the applied set; false when no confirmation was pending (it was
/// confirmed, or rolled back, already).
pub fn confirm(control: BorrowedFd<'_>) -> Result<bool> {
    run(
        control,
        filter_control_command::FILTER_CONTROL_CONFIRM,
        Default::default(),
    )
}

/// Puts the previous set back now; false when nothing was pending.
pub fn roll_back(control: BorrowedFd<'_>) -> Result<bool> {
    run(
        control,
        filter_control_command::FILTER_CONTROL_ROLLBACK,
        Default::default(),
    )
}

/// Where the last commit-confirm stands, as `filter show`, `stats`,
/// `health` and the metrics report it.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    /// pending, confirmed or rolled_back.
    pub state: &'static str,
    pub applied_generation: u32,
    pub rollback_generation: u32,
    pub armed_at: String,
    pub deadline: String,
    /// Until the deadline; 0 once it passed or the state settled.
    pub remaining_ms: u64,
    /// When it was confirmed or rolled back.
    pub settled_at: Option<String>,
}

impl Confirmation {
    pub fn pending(&self) -> bool {
        self.state == "pending"
    }
}

/// The last commit-confirm of the filter, None when there never was one.
pub fn read(maps: &FilterMaps<'_>) -> Result<Option<Confirmation>> {
    let Some(c) = lookup::<filter_confirm>(maps.confirm, &0u32.to_ne_bytes())? else {
        return Ok(None);
    };
    let state = match filter_confirm_state(c.state as u32) {
        filter_confirm_state::FILTER_CONFIRM_PENDING => "pending",
        filter_confirm_state::FILTER_CONFIRM_CONFIRMED => "confirmed",
        filter_confirm_state::FILTER_CONFIRM_ROLLED_BACK => "rolled_back",
        _ => return Ok(None),
    };
    let anchor = BootAnchor::now();
    let remaining = match state {
        "pending" => c.deadline_ns.saturating_sub(anchor.boottime_ns),
        _ => 0,
    };
    Ok(Some(Confirmation {
        state,
        applied_generation: c.applied_generation,
        rollback_generation: c.rollback_generation,
        armed_at: clock::rfc3339(anchor.wall(c.armed_ns)),
        deadline: clock::rfc3339(anchor.wall(c.deadline_ns)),
        remaining_ms: remaining / 1_000_000,
        settled_at: (c.settled_ns != 0).then(|| clock::rfc3339(anchor.wall(c.settled_ns))),
    }))
}

/// The pending confirmation, as an error for a command that must not run
/// while one is (an apply would overwrite the set the rollback needs).
pub fn refuse_if_pending(maps: &FilterMaps<'_>, interface: &str, doing: &str) -> Result<()> {
    match read(maps)? {
        Some(c) if c.pending() => Err(Failure::new(format!(
            "cannot {doing} {interface}: a confirmation is pending until {} ({} s left), and the previous rule set it would restore must stay",
            c.deadline,
            c.remaining_ms / 1000
        ))
        .hint(format!(
            "keep the applied set with: meshbpf filter confirm {interface}; or restore the previous one now with: meshbpf filter rollback {interface}"
        ))
        .into()),
        _ => Ok(()),
    }
}
