//! `meshbpf filter apply|diff|confirm|rollback|show|check|counters|remove|ban`:
//! the rule set of xdp_mesh_filter, its lifecycle and its ban set.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{
    BanOptions, FilterApplyArgs, FilterBanArgs, FilterBanCommand, FilterCheckArgs, FilterCommand,
    FilterCountersCommand, FilterCountersResetArgs, FilterDiffArgs, FilterShowArgs,
};
use crate::error::{Failure, Reported};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{caps, netdev};
use crate::output::{self, Output, Report};
use crate::programs::xdp_counter;
use crate::programs::xdp_mesh_filter::bans::{self, Ban, BanEntry, BanSummary, Changed};
use crate::programs::xdp_mesh_filter::confirm::{self, Confirmation};
use crate::programs::xdp_mesh_filter::{
    self, rule_counters, ActiveRules, FilterCounters, PinnedMaps, Publish,
};
use crate::rules::bans::{self as ban_input, Ttl};
use crate::rules::compile::{self, CompileStats, LoadedRules};
use crate::rules::diff::{self, RuleDiff, Settings};
use crate::rules::filter::Rule;
use crate::rules::{PortRange, Protocol};
use crate::state;
use crate::state::saved_rules::{self, SavedRules};

pub fn run(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    command: &FilterCommand,
) -> Result<()> {
    match command {
        FilterCommand::Apply(args) => apply(root, saved, out, args),
        FilterCommand::Diff(args) => diff(root, out, args),
        FilterCommand::Confirm(args) => confirm(root, saved, out, args),
        FilterCommand::Rollback(args) => rollback(root, saved, out, args),
        FilterCommand::Show(args) => show(root, out, args),
        FilterCommand::Check(args) => check(out, args),
        FilterCommand::Counters(FilterCountersCommand::Reset(args)) => reset(root, out, args),
        FilterCommand::Remove(args) => remove(root, saved, out, args),
        FilterCommand::Ban(args) => ban(root, out, args),
    }
}

#[derive(Debug, Serialize)]
struct CompileReport {
    rules: usize,
    /// How the set compiled; in text only with `--stats`.
    stats: CompileStats,
    #[serde(skip)]
    detailed: bool,
    warnings: Vec<String>,
}

impl CompileReport {
    fn of(loaded: &compile::LoadedRules, detailed: bool) -> Self {
        CompileReport {
            rules: loaded.rules.rules.len(),
            stats: loaded.compiled.stats(),
            detailed,
            warnings: loaded.compiled.warnings.clone(),
        }
    }

    fn summary(&self) -> String {
        let s = &self.stats;
        let mut text = format!(
            "{} rules compile to {} vectors and {} table entries ({})",
            self.rules,
            s.vectors,
            s.table_entries,
            mebibytes(s.memory_bytes)
        );
        if self.detailed {
            text.push_str(&self.details());
        }
        for w in &self.warnings {
            text.push_str(&format!("\nwarning: {w}"));
        }
        text
    }

    fn details(&self) -> String {
        let s = &self.stats;
        let address = |used: bool, trie: bool, chunks: usize, prefixes: usize| {
            match (
            used, trie,
        ) {
            (false, _) => looked_up(false).to_string(),
            (true, false) => format!(
                "IPv4 in the table ({chunks} chunks of 256), IPv6 in the LPM trie ({prefixes} prefixes)"
            ),
            (true, true) => format!("IPv4 and IPv6 in the LPM trie ({prefixes} prefixes)"),
        }
        };
        let l = &s.lookups;
        format!(
            "\n  memory: {} in all: vectors {} ({} of {} bytes), table {} ({} entries)\
             \n  source: {}\n  destination: {}\n  protocol: {}\n  source port: {}\n  destination port: {}\
             \n  per packet at most: {} map lookups and a scan of {} vector words",
            mebibytes(s.memory_bytes),
            mebibytes(s.vector_bytes),
            s.vectors,
            compile::VECTOR_BYTES,
            mebibytes(s.table_bytes),
            s.table_entries,
            address(l.src, l.v4_trie[0], s.chunks[0], s.trie_prefixes[0]),
            address(l.dst, l.v4_trie[1], s.chunks[1], s.trie_prefixes[1]),
            looked_up(l.protocol),
            looked_up(l.sport),
            looked_up(l.dport),
            s.max_map_lookups,
            s.max_scan_words
        )
    }
}

fn looked_up(field: bool) -> &'static str {
    if field {
        "looked up"
    } else {
        "not looked up (no rule names one)"
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl Report for CompileReport {
    fn render(&self) -> String {
        self.summary()
    }
}

fn check(out: &Output, args: &FilterCheckArgs) -> Result<()> {
    out.emit(&CompileReport::of(
        &compile::load_rules(&args.rules).map_err(Failure::from)?,
        args.stats,
    ))?;
    Ok(())
}

/// The filter attachment of an interface, or an error saying how to get one.
fn filter_dir(root: &StateRoot, interface: &str) -> Result<AttachmentDir> {
    let dir = root.attachment(interface, xdp_mesh_filter::PROGRAM);
    if !dir.is_committed() {
        return Err(
            Failure::new(format!("xdp_mesh_filter is not attached to {interface}"))
                .hint(format!(
                    "attach it with: meshbpf attach {interface} --filter RULES.json"
                ))
                .into(),
        );
    }
    Ok(dir)
}

/// The filter the kernel runs on an interface, whichever directory pins
/// its link: a reader reports the kernel's program, not the pins' layout.
fn running_filter(root: &StateRoot, interface: &str) -> Result<AttachmentDir> {
    let Some(link_dir) = state::xdp_attachment(root, interface)? else {
        return filter_dir(root, interface);
    };
    let attachment = state::inspect(&link_dir)?;
    if attachment.program == xdp_mesh_filter::PROGRAM {
        if let Some(interrupted) = &attachment.interrupted {
            log::warn!("{interrupted}; meshbpf health --fix finishes it");
        }
        return Ok(link_dir.sibling(xdp_mesh_filter::PROGRAM));
    }
    let failure = Failure::new(format!(
        "xdp_mesh_filter is not running on {interface}: the kernel runs {} (program {})",
        attachment.program, attachment.prog_id
    ));
    Err(match attachment.interrupted {
        Some(interrupted) => failure.hint(format!("{interrupted}; run meshbpf health --fix")),
        None => failure.hint(format!(
            "attach it with: meshbpf attach {interface} --filter RULES.json"
        )),
    }
    .into())
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    interface: String,
    generation: u8,
    /// Rules whose id was in the previous set, which kept their counts.
    carried: usize,
    /// With --confirm: when the previous set comes back unless confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmation: Option<Confirmation>,
    /// The file the boot unit applies; with --confirm, where the set waits
    /// for its confirmation to become that file.
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_to: Option<PathBuf>,
    #[serde(flatten)]
    compiled: CompileReport,
}

impl Report for ApplyReport {
    fn render(&self) -> String {
        let mut text = format!(
            "applied to {} atomically (generation {}, {} rules kept their counts): {}",
            self.interface,
            self.generation,
            self.carried,
            self.compiled.summary()
        );
        if let Some(c) = &self.confirmation {
            text.push_str(&format!(
                "\nthe previous rule set comes back at {} ({}) unless you run: meshbpf filter confirm {}",
                c.deadline,
                output::duration(std::time::Duration::from_millis(c.remaining_ms)),
                self.interface
            ));
        }
        text
    }
}

fn apply(root: &StateRoot, saved: &SavedRules, out: &Output, args: &FilterApplyArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    let mut loaded = compile::load_rules(&args.rules).map_err(Failure::from)?;
    if args.dry_run {
        let report = diff_report(root, &args.interface, &loaded, true)?;
        out.emit(&report)?;
        return match report.refused {
            None => Ok(()),
            Some(_) => Err(Reported.into()),
        };
    }
    caps::require("filter apply", &[caps::BPF])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let dir = filter_dir(root, &args.interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let maps = pinned.maps();
    let pending = confirm::read(&maps)?.filter(Confirmation::pending);
    if let (Some(pending), Some(_)) = (pending, args.confirm) {
        // A re-run of the apply that armed it (after a kill, say) has
        // nothing left to do; any other set must wait.
        if active_diff(&maps, &loaded)?.is_empty() {
            let saved_to = saved
                .stage(&args.interface, &loaded.rules)
                .map_err(|err| loaded.compiled.warnings.push(saved_rules::not_saved(&err)))
                .ok();
            out.emit(&ApplyReport {
                interface: args.interface.clone(),
                generation: xdp_mesh_filter::active_generation(&maps)?,
                carried: loaded.rules.rules.len(),
                confirmation: Some(pending),
                saved_to,
                compiled: CompileReport::of(&loaded, false),
            })?;
            return Ok(());
        }
    }
    confirm::refuse_if_pending(&maps, &args.interface, "apply a rule set to")?;
    let before = rule_counters::stored(&maps, xdp_mesh_filter::active_generation(&maps)?)?;
    let carried = loaded
        .rules
        .rules
        .iter()
        .filter(|r| before.iter().any(|b| b.id() == r.id))
        .count();
    let (generation, confirmation, saved_to) = match args.confirm {
        None => {
            let generation =
                xdp_mesh_filter::apply(&maps, &loaded.rules, &loaded.compiled, Publish::Now)?;
            let saved_to = saved.record(
                &args.interface,
                &loaded.rules,
                &mut loaded.compiled.warnings,
            );
            (generation, None, saved_to)
        }
        Some(window) => {
            let control = confirm::control(&dir)?;
            // Staged first: a confirm that comes finds the set to settle.
            let staged = saved
                .stage(&args.interface, &loaded.rules)
                .map_err(|err| loaded.compiled.warnings.push(saved_rules::not_saved(&err)))
                .ok();
            let publish = Publish::UnlessConfirmed {
                control: control.as_fd(),
                window,
            };
            let generation =
                xdp_mesh_filter::apply(&maps, &loaded.rules, &loaded.compiled, publish)?;
            (generation, confirm::read(&maps)?, staged)
        }
    };
    out.emit(&ApplyReport {
        interface: args.interface.clone(),
        generation,
        carried,
        confirmation,
        saved_to,
        compiled: CompileReport::of(&loaded, false),
    })?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct Unreachable {
    index: usize,
    id: String,
    /// The earlier rule that matches every packet this one matches.
    by: usize,
    by_id: String,
}

#[derive(Debug, Serialize)]
struct DiffReport {
    interface: String,
    /// Whether `filter apply` would go ahead now.
    would_apply: bool,
    /// Why it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    #[serde(flatten)]
    diff: RuleDiff,
    /// Rules of the new set that no packet can reach.
    unreachable: Vec<Unreachable>,
    compiled: CompileReport,
}

impl Report for DiffReport {
    fn render(&self) -> String {
        let d = &self.diff;
        let mut text = format!(
            "{}: {} added, {} removed, {} changed, {} moved, {} unchanged",
            self.interface,
            d.added.len(),
            d.removed.len(),
            d.changed.len(),
            d.moved.len(),
            d.unchanged
        );
        for a in &d.added {
            text.push_str(&format!(
                "\n+ [{}] {} {}",
                a.index,
                a.rule.id,
                line(&a.rule)
            ));
        }
        for r in &d.removed {
            text.push_str(&format!(
                "\n- [{}] {} {}",
                r.index,
                r.rule.id,
                line(&r.rule)
            ));
        }
        for c in &d.changed {
            text.push_str(&format!(
                "\n~ [{}→{}] {} ({}): {} → {}",
                c.old_index,
                c.index,
                c.id,
                c.fields.join(", "),
                line(&c.before),
                line(&c.after)
            ));
        }
        for m in &d.moved {
            text.push_str(&format!("\n↕ [{}→{}] {}", m.old_index, m.index, m.id));
        }
        for s in &d.settings {
            let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "off".into());
            text.push_str(&format!(
                "\n{}: {} → {}",
                s.field,
                shown(&s.before),
                shown(&s.after)
            ));
        }
        text.push('\n');
        text.push_str(&self.compiled.summary());
        if let Some(why) = &self.refused {
            text.push_str(&format!("\nwould not apply: {why}"));
        }
        text
    }
}

fn line(rule: &Rule) -> String {
    format!("{} {}", rule.action.as_str(), summary(rule))
}

fn diff(root: &StateRoot, out: &Output, args: &FilterDiffArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    let loaded = compile::load_rules(&args.rules).map_err(Failure::from)?;
    out.emit(&diff_report(root, &args.interface, &loaded, false)?)?;
    Ok(())
}

/// Compares `loaded` with the active set; reads the kernel, writes nothing.
fn diff_report(
    root: &StateRoot,
    interface: &str,
    loaded: &LoadedRules,
    detailed: bool,
) -> Result<DiffReport> {
    caps::require("filter diff", &[caps::BPF])?;
    let _lock = root.lock_shared()?;
    let dir = running_filter(root, interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let maps = pinned.maps();
    let refused = confirm::refuse_if_pending(&maps, interface, "apply a rule set to")
        .err()
        .map(|err| format!("{err:#}"));
    let rules = &loaded.rules.rules;
    Ok(DiffReport {
        interface: interface.to_owned(),
        would_apply: refused.is_none(),
        refused,
        diff: active_diff(&maps, loaded)?,
        unreachable: loaded
            .compiled
            .unreachable
            .iter()
            .map(|&(index, by)| Unreachable {
                index,
                id: rules[index].id.clone(),
                by,
                by_id: rules[by].id.clone(),
            })
            .collect(),
        compiled: CompileReport::of(loaded, detailed),
    })
}

/// What applying `loaded` would change in the active set.
fn active_diff(maps: &xdp_mesh_filter::FilterMaps<'_>, loaded: &LoadedRules) -> Result<RuleDiff> {
    let active = xdp_mesh_filter::read_rules(maps)?;
    let old: Vec<Rule> = active.rules.iter().map(|r| r.rule.clone()).collect();
    let old_settings = Settings {
        default: active.default,
        rate_limit: active.rate_limit,
        syn_flood: active.syn_flood,
    };
    // Compared as the kernel will hold them (names cut to fit).
    let mut new = loaded.rules.clone();
    new.rules = new.rules.iter().map(xdp_mesh_filter::as_stored).collect();
    Ok(diff::diff(&old, old_settings, &new))
}

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

fn confirm(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    args: &FilterShowArgs,
) -> Result<()> {
    settle(root, saved, out, &args.interface, Settle::Confirm)
}

fn rollback(
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
    let dir = filter_dir(root, interface)?;
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

fn reset(root: &StateRoot, out: &Output, args: &FilterCountersResetArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter counters reset", &[caps::BPF])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let dir = filter_dir(root, &args.interface)?;
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
            Some(l) => format!("{} pps, burst {}{}", l.pps, l.burst, ban_suffix(l)),
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
                summary(&r.rule).into(),
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

fn show(root: &StateRoot, out: &Output, args: &FilterShowArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter show", &[caps::BPF])?;
    // Everything is read before the lock is released and the report is
    // written: a reader stalled on a pipe must not hold up a change.
    let report = {
        let _lock = root.lock_shared()?;
        let dir = running_filter(root, &args.interface)?;
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
struct RemoveReport {
    interface: String,
    program: &'static str,
    /// False when the filter was already gone (a re-run, or one that
    /// finished an interrupted remove).
    swapped: bool,
}

impl Report for RemoveReport {
    fn render(&self) -> String {
        if !self.swapped {
            return format!(
                "{} already runs {}: there is no filter to remove",
                self.interface, self.program
            );
        }
        format!(
            "{} runs {} again, swapped atomically; the filter's pins are gone",
            self.interface, self.program
        )
    }
}

fn remove(root: &StateRoot, saved: &SavedRules, out: &Output, args: &FilterShowArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter remove", &[caps::BPF, caps::NET_ADMIN])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let to = root.attachment(&args.interface, xdp_counter::PROGRAM);
    let from = root.attachment(&args.interface, xdp_mesh_filter::PROGRAM);
    // Re-runnable: the state it leaves is no error.
    let swapped = !to.link().exists() || from.is_committed();
    if swapped {
        let from = filter_dir(root, &args.interface)?;
        state::swap(&from, &to, || xdp_counter::install(&to, None, &from))?;
    }
    // After the swap: a kill before it leaves the filter and its file.
    saved.forget(&args.interface)?;
    out.emit(&RemoveReport {
        interface: args.interface.clone(),
        program: xdp_counter::PROGRAM,
        swapped,
    })?;
    Ok(())
}

/// One line per rule for the table: its conditions in file order.
fn summary(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(src) = rule.src {
        parts.push(format!("src {src}"));
    }
    if let Some(dst) = rule.dst {
        parts.push(format!("dst {dst}"));
    }
    if rule.protocol != Protocol::Any {
        parts.push(rule.protocol.to_string());
    }
    let range = |r: PortRange| {
        if r.lo == r.hi {
            r.lo.to_string()
        } else {
            format!("{}-{}", r.lo, r.hi)
        }
    };
    if let Some(r) = rule.sport {
        parts.push(format!("sport {}", range(r)));
    }
    if let Some(r) = rule.dport {
        parts.push(format!("dport {}", range(r)));
    }
    if let Some(l) = rule.rate_limit {
        parts.push(format!(
            "limit {} pps burst {}{}",
            l.pps,
            l.burst,
            ban_suffix(&l)
        ));
    }
    if parts.is_empty() {
        parts.push("any IP packet".into());
    }
    if let Some(name) = &rule.name {
        parts.push(format!("({name})"));
    }
    parts.join(" ")
}

#[derive(Debug, Serialize)]
struct BanChangeReport {
    interface: String,
    /// add, del or load.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    /// The TTL of `--ttl`; null: until deleted (a loaded line may give its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<Ttl>,
    #[serde(flatten)]
    changed: Changed,
    /// From reading the input to the set's last write.
    elapsed_ms: u64,
    set: BanSummary,
}

impl Report for BanChangeReport {
    fn render(&self) -> String {
        let c = &self.changed;
        let mut parts = Vec::new();
        if self.action != "del" {
            let how_long = match self.ttl {
                Some(ttl) => format!("for {ttl}"),
                None if self.action == "load" => "for each line's TTL, else until deleted".into(),
                None => "until deleted".into(),
            };
            parts.push(format!(
                "banned {} new, renewed {} ({how_long})",
                c.added, c.renewed
            ));
        }
        if self.action == "del" {
            parts.push(format!("lifted {}", c.deleted.len()));
        }
        if !c.not_banned.is_empty() {
            let list: Vec<String> = c.not_banned.iter().map(ToString::to_string).collect();
            parts.push(format!("not banned: {}", list.join(", ")));
        }
        if c.swept > 0 {
            parts.push(format!("swept {} expired", c.swept));
        }
        format!(
            "{}: {} in {} ms; the ban set holds {} entries",
            self.interface,
            parts.join("; "),
            self.elapsed_ms,
            output::count(self.set.entries)
        )
    }
}

#[derive(Debug, Serialize)]
struct BanListReport {
    interface: String,
    #[serde(flatten)]
    set: BanSummary,
    /// Entries whose TTL ran out, which never match and go at the next change.
    expired_unswept: usize,
    bans: Vec<BanEntry>,
}

impl Report for BanListReport {
    fn render(&self) -> String {
        let s = &self.set;
        let mut text = format!(
            "{} · ban set · {} live entries ({} expired, swept at the next change) · dropped {} packets, {} · {} promoted by limiters{}\n",
            self.interface,
            output::count(self.bans.len() as u64),
            self.expired_unswept,
            output::count(s.banned.packets),
            output::bytes(s.banned.bytes),
            output::count(s.promoted),
            if s.promote_failed > 0 {
                format!(", {} refused: set full", output::count(s.promote_failed))
            } else {
                String::new()
            }
        );
        let mut table = output::table(&["cidr", "by", "reason", "expires", "packets", "bytes"]);
        for b in &self.bans {
            let expires = match (&b.expires_at, b.expires_in_ms) {
                (Some(at), Some(ms)) => format!(
                    "{at} (in {})",
                    output::duration(std::time::Duration::from_millis(ms))
                ),
                _ => "never".into(),
            };
            table.add_row(vec![
                b.cidr.to_string().into(),
                b.origin.into(),
                b.reason.clone().unwrap_or_default().into(),
                expires.into(),
                output::right(output::count(b.packets)),
                output::right(output::bytes(b.bytes)),
            ]);
        }
        text.push_str(&table.to_string());
        text
    }
}

fn ban(root: &StateRoot, out: &Output, args: &FilterBanArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter ban", &[caps::BPF])?;
    let started = std::time::Instant::now();
    let no_options = BanOptions {
        ttl: None,
        reason: None,
    };
    let (action, adds, del, options, file): (_, Vec<Ban>, &[_], _, _) = match &args.command {
        FilterBanCommand::List => return ban_list(root, out, &args.interface),
        FilterBanCommand::Add(a) => {
            let adds = a
                .cidrs
                .iter()
                .map(|&prefix| Ban {
                    prefix,
                    ttl: a.ban.ttl,
                })
                .collect();
            ("add", adds, &[], &a.ban, None)
        }
        FilterBanCommand::Del(d) => ("del", Vec::new(), &d.cidrs, &no_options, None),
        FilterBanCommand::Load(l) => {
            let adds = ban_input::load_list(&l.file)?
                .into_iter()
                .map(|listed| Ban {
                    prefix: listed.prefix,
                    ttl: listed.ttl.or(l.ban.ttl),
                })
                .collect();
            ("load", adds, &[], &l.ban, Some(l.file.clone()))
        }
    };
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let dir = filter_dir(root, &args.interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let maps = pinned.maps();
    let changed = bans::change(&maps, &adds, options.reason.as_deref(), del)?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    out.emit(&BanChangeReport {
        interface: args.interface.clone(),
        action,
        file,
        ttl: options.ttl,
        changed,
        elapsed_ms,
        set: bans::summary(&maps)?,
    })?;
    Ok(())
}

fn ban_list(root: &StateRoot, out: &Output, interface: &str) -> Result<()> {
    let report = {
        let _lock = root.lock_shared()?;
        let dir = running_filter(root, interface)?;
        let pinned = PinnedMaps::open(&dir)?;
        let maps = pinned.maps();
        let (entries, expired) = bans::list(&maps)?;
        BanListReport {
            interface: interface.to_owned(),
            set: bans::summary(&maps)?,
            expired_unswept: expired,
            bans: entries,
        }
    };
    out.emit(&report)?;
    Ok(())
}

fn ban_suffix(limit: &crate::rules::Limit) -> String {
    limit
        .ban
        .map(|ttl| format!(", refused sources banned for {ttl}"))
        .unwrap_or_default()
}
