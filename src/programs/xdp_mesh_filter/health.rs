//! xdp_mesh_filter's health checks: how full its rule and limiter tables
//! are, whether it drops most of what it judges, and whether a rule set
//! waits for its confirmation.

use anyhow::Result;

use super::capture::{self, State};
use super::confirm::Confirmation;
use super::{FilterCounters, PinnedMaps};
use crate::health::{fullness, Check, Fix};
use crate::kernel::pins::{AttachmentDir, StateRoot};

pub fn checks(dir: &AttachmentDir, max_drop_percent: u8) -> Result<Vec<Check>> {
    let pinned = PinnedMaps::open(dir)?;
    let maps = pinned.maps();
    let rules = super::read_rules(&maps)?.rules.len() as u64;
    let limiters = maps.limiters;
    let sources = limiters.keys().count() as u64;
    Ok(vec![
        fullness(
            "filter_rules",
            "rules",
            rules,
            u64::from(super::MAX_RULES),
            "so a larger rule set will be refused",
            "merge rules that share an action (a rule takes a list of CIDRs)",
        ),
        fullness(
            "limiter_table",
            "rate-limited sources",
            sources,
            u64::from(limiters.max_entries()),
            "so the least recently seen sources are forgotten and get a fresh burst",
            "a source set this large is better limited by CIDR rules",
        ),
        drop_rate(&super::read_stats(&maps)?, max_drop_percent, &dir.interface),
        confirmation(super::confirm::read(&maps)?, &dir.interface),
        capture(capture::state(dir)?),
    ])
}

/// A capture left switched on by a killed `meshbpf capture` costs every
/// packet a copy that nobody reads.
fn capture(state: State) -> Check {
    const NAME: &str = "filter_capture";
    match state {
        State::Off => Check::ok(NAME, "no capture runs"),
        State::Running { pid } => Check::ok(NAME, format!("a capture runs (pid {pid})")),
        State::NoMaps => Check::ok(
            NAME,
            "attached by a meshbpf without capture: re-attach the filter to capture",
        ),
        State::Stale { pid } => Check::warn(
            NAME,
            format!(
                "a capture of pid {pid}, which no longer runs, is still switched on: every packet it selects is copied for nobody"
            ),
            "meshbpf health --fix switches it off, and so does the next capture on this interface",
        ),
    }
}

/// `health --fix`: switches off the captures left on by killed processes.
pub fn fix_stale_captures(root: &StateRoot) -> Result<Vec<Fix>> {
    let mut fixes = Vec::new();
    for dir in root.attachments()? {
        if dir.program != super::PROGRAM {
            continue;
        }
        if let Some(pid) = capture::clear_stale(&dir).transpose() {
            fixes.push(Fix::of(
                "stop_stale_capture",
                pid.map(|pid| {
                    format!("switched off the capture of pid {pid} on {}", dir.interface)
                }),
            ));
        }
    }
    Ok(fixes)
}

/// A pending confirmation is a warning: unless someone confirms, the rules
/// in force change by themselves at the deadline.
fn confirmation(last: Option<Confirmation>, interface: &str) -> Check {
    match last {
        Some(c) if c.pending() => Check::warn(
            "filter_confirmation",
            format!(
                "the rule set waits for its confirmation: generation {} comes back at {} ({} s left)",
                c.rollback_generation,
                c.deadline,
                c.remaining_ms / 1000
            ),
            format!("meshbpf filter confirm {interface} keeps it; meshbpf filter rollback {interface} restores the previous set now"),
        ),
        Some(c) => Check::ok(
            "filter_confirmation",
            format!(
                "none pending; the last one was {} at {}",
                c.state.replace('_', " "),
                c.settled_at.as_deref().unwrap_or("an unknown time")
            ),
        ),
        None => Check::ok("filter_confirmation", "none pending"),
    }
}

fn drop_rate(counters: &FilterCounters, max_percent: u8, interface: &str) -> Check {
    let (pass, drop) = (
        counters.verdicts.pass.packets,
        counters.verdicts.drop.packets,
    );
    let judged = pass + drop;
    if judged == 0 {
        return Check::ok("drop_rate", "no packets judged yet");
    }
    let percent = drop as f64 * 100.0 / judged as f64;
    let detail = format!("dropped {drop} of {judged} packets ({percent:.1}%) since attach");
    if percent > f64::from(max_percent) {
        Check::warn(
            "drop_rate",
            format!("{detail}, more than {max_percent}%"),
            format!("check the rules and the default policy with meshbpf filter show {interface}; --max-drop-percent sets this threshold"),
        )
    } else {
        Check::ok("drop_rate", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;
    use crate::programs::xdp_counter::traffic::Counter;
    use crate::programs::xdp_mesh_filter::Verdicts;

    #[test]
    fn the_drop_rate_warns_above_the_threshold() {
        let counters = |pass, drop| FilterCounters {
            verdicts: Verdicts {
                pass: Counter {
                    packets: pass,
                    bytes: 0,
                },
                drop: Counter {
                    packets: drop,
                    bytes: 0,
                },
            },
            ..Default::default()
        };
        assert_eq!(
            drop_rate(&counters(0, 0), 50, "eth0").detail,
            "no packets judged yet"
        );
        let half = drop_rate(&counters(5, 5), 50, "eth0");
        assert_eq!(half.status, Status::Ok);
        let most = drop_rate(&counters(3, 7), 50, "eth0");
        assert_eq!(most.status, Status::Warn);
        assert_eq!(
            most.detail,
            "dropped 7 of 10 packets (70.0%) since attach, more than 50%"
        );
        assert!(most.hint.unwrap().contains("meshbpf filter show eth0"));
    }
}
