//! `meshbpf filter show` and `filter counters reset`: the rule set in
//! force with its ids and counts, the filter's counters, a pending
//! confirmation and the ban set's size.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{FilterCountersResetArgs, FilterShowArgs};
use crate::error::Failure;
use crate::kernel::pins::StateRoot;
use crate::kernel::{caps, netdev};
use crate::output::{self, Output, Report};
use crate::programs::xdp_mesh_filter::confirm::{self, Confirmation};
use crate::programs::xdp_mesh_filter::{
    self, rule_counters, ActiveRules, FilterCounters, PinnedMaps,
};
use crate::state::{self, filter};

#[derive(Debug, Serialize)]
struct ShowReport {
    interface: String,
    #[serde(flatten)]
    active: ActiveRules,
    counters: FilterCounters,
    /// The last `apply --confirm`, null when there was none.
    confirmation: Option<Confirmation>,
}

impl Report for ShowReport {
    fn render(&self) -> String {
        let a = &self.active;
        let limit = |l: &Option<crate::rules::Limit>| match l {
            Some(l) => format!("{} pps, burst {}{}", l.pps, l.burst, l.ban_note()),
            None => "off".into(),
        };
        let c = &self.counters;
        let mut text = format!(
            "{} · xdp_mesh_filter · generation {} · default {} · rate limit {} · SYN flood {}\n",
            self.interface,
            a.generation,
            a.default.as_str(),
            limit(&a.rate_limit),
            limit(&a.syn_flood)
        );
        if let Some(c) = self.confirmation.as_ref().filter(|c| c.pending()) {
            text.push_str(&format!(
                "confirmation pending: generation {} comes back at {} ({} left) unless confirmed\n",
                c.rollback_generation,
                c.deadline,
                output::duration(std::time::Duration::from_millis(c.remaining_ms))
            ));
        }
        let mut table = output::table(&["#", "id", "action", "rule", "packets", "bytes"]);
        for r in &a.rules {
            table.add_row(vec![
                output::right(r.index),
                r.rule.id.as_str().into(),
                r.rule.action.as_str().into(),
                r.rule.summary().into(),
                output::right(output::count(r.packets)),
                output::right(output::bytes(r.bytes)),
            ]);
        }
        table.add_row(vec![
            "".into(),
            "".into(),
            a.default.as_str().into(),
            "(default)".into(),
            output::right(output::count(c.defaulted.packets)),
            output::right(output::bytes(c.defaulted.bytes)),
        ]);
        text.push_str(&table.to_string());
        text.push_str(&format!(
            "\npassed {} · dropped {} · rate-limited {} from {} sources · SYN-dropped {} from {} sources\
             \nban set: {} entries · dropped {} (meshbpf filter ban {} list)",
            output::count(c.verdicts.pass.packets),
            output::count(c.verdicts.drop.packets),
            output::count(c.rate_limited.packets),
            c.rate_limited_sources,
            output::count(c.syn_dropped.packets),
            c.syn_flood_sources,
            output::count(c.bans.entries),
            output::count(c.bans.banned.packets),
            self.interface
        ));
        text
    }
}

pub fn show(root: &StateRoot, out: &Output, args: &FilterShowArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter show", &[caps::BPF])?;
    // Everything is read before the lock is released and the report is
    // written: a reader stalled on a pipe must not hold up a change.
    let report = {
        let _lock = root.lock_shared()?;
        let dir = filter::running_filter(root, &args.interface)?;
        let pinned = PinnedMaps::open(&dir)?;
        let maps = pinned.maps();
        ShowReport {
            interface: args.interface.clone(),
            active: xdp_mesh_filter::read_rules(&maps)?,
            counters: xdp_mesh_filter::read_stats(&maps)?,
            confirmation: confirm::read(&maps)?,
        }
    };
    out.emit(&report)?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct ResetReport {
    interface: String,
    /// The ids of the rules whose counts are zero now.
    reset: Vec<String>,
}

impl Report for ResetReport {
    fn render(&self) -> String {
        format!(
            "{}: zeroed the counts of {} rules",
            self.interface,
            self.reset.len()
        )
    }
}

pub fn reset(root: &StateRoot, out: &Output, args: &FilterCountersResetArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter counters reset", &[caps::BPF])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let dir = filter::filter_dir(root, &args.interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let reset = rule_counters::reset(&pinned.maps(), args.rule.as_deref())?;
    if let (Some(id), true) = (&args.rule, reset.is_empty()) {
        return Err(Failure::new(format!(
            "no rule of the filter on {} has id {id:?}",
            args.interface
        ))
        .hint(format!(
            "meshbpf filter show {} lists the ids",
            args.interface
        ))
        .into());
    }
    out.emit(&ResetReport {
        interface: args.interface.clone(),
        reset,
    })?;
    Ok(())
}
