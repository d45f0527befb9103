//! `meshbpf filter check|apply|diff|remove`: compiling a rule set, putting
//! it in force (or saying what that would change), and taking the filter
//! off. `filter_confirm`, `filter_show` and `filter_ban` have the rest.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{FilterApplyArgs, FilterCheckArgs, FilterDiffArgs, FilterShowArgs};
use crate::error::{Failure, Reported};
use crate::kernel::caps;
use crate::kernel::netdev;
use crate::kernel::pins::StateRoot;
use crate::output::{self, Output, Report};
use crate::programs::xdp_counter;
use crate::programs::xdp_mesh_filter::confirm::{self, Confirmation};
use crate::programs::xdp_mesh_filter::{self, rule_counters, PinnedMaps, Publish};
use crate::rules::compile::{self, LoadedRules};
use crate::rules::compile_report::CompileReport;
use crate::rules::diff::{self, RuleDiff, Settings};
use crate::rules::filter::Rule;
use crate::state::saved_rules::{self, SavedRules};
use crate::state::{self, filter};

/// `filter check`: how the file compiled, nothing else.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct CheckReport(CompileReport);

impl Report for CheckReport {
    fn render(&self) -> String {
        self.0.summary()
    }
}

pub fn check(out: &Output, args: &FilterCheckArgs) -> Result<()> {
    out.emit(&CheckReport(CompileReport::of(
        &compile::load_rules(&args.rules).map_err(Failure::from)?,
        args.stats,
    )))?;
    Ok(())
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

pub fn apply(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    args: &FilterApplyArgs,
) -> Result<()> {
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
    let dir = filter::filter_dir(root, &args.interface)?;
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
    let before_ids: HashSet<String> = before.iter().map(|b| b.id()).collect();
    let carried = loaded
        .rules
        .rules
        .iter()
        .filter(|r| before_ids.contains(&r.id))
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
        for (sign, placed) in [("+", &d.added), ("-", &d.removed)] {
            for p in placed {
                text.push_str(&format!(
                    "\n{sign} [{}] {} {}",
                    p.index,
                    p.rule.id,
                    line(&p.rule)
                ));
            }
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
    format!("{} {}", rule.action.as_str(), rule.summary())
}

pub fn diff(root: &StateRoot, out: &Output, args: &FilterDiffArgs) -> Result<()> {
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
    let dir = filter::running_filter(root, interface)?;
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

pub fn remove(
    root: &StateRoot,
    saved: &SavedRules,
    out: &Output,
    args: &FilterShowArgs,
) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("filter remove", &[caps::BPF, caps::NET_ADMIN])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let to = root.attachment(&args.interface, xdp_counter::PROGRAM);
    let from = root.attachment(&args.interface, xdp_mesh_filter::PROGRAM);
    // Re-runnable: the state it leaves is no error.
    let swapped = !to.link().exists() || from.is_committed();
    if swapped {
        let from = filter::filter_dir(root, &args.interface)?;
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
