//! xdp_mesh_filter's health checks: how full its rule and limiter tables
//! are, whether it drops most of what it judges, and whether a rule set
//! waits for its confirmation.

use anyhow::Result;

use super::confirm::Confirmation;
use super::{FilterCounters, PinnedMaps};
use crate::health::{fullness, Check};
use crate::kernel::pins::AttachmentDir;
use crate::programs::capture;

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
        capture::check(dir)?,
    ])
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
