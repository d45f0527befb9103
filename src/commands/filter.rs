//! `meshbpf filter apply|show|check|remove`: the rule set of xdp_mesh_filter.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{FilterApplyArgs, FilterCheckArgs, FilterCommand, FilterShowArgs};
use crate::error::Failure;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{caps, netdev};
use crate::output::{self, Output, Report};
use crate::programs::xdp_counter;
use crate::programs::xdp_mesh_filter::{self, ActiveRules, FilterCounters, PinnedMaps};
use crate::rules::compile::{self, CompileStats};
use crate::rules::filter::Rule;
use crate::rules::{PortRange, Protocol};
use crate::state;

pub fn run(root: &StateRoot, out: &Output, command: &FilterCommand) -> Result<()> {
    match command {
        FilterCommand::Apply(args) => apply(root, out, args),
        FilterCommand::Show(args) => show(root, out, args),
        FilterCommand::Check(args) => check(out, args),
        FilterCommand::Remove(args) => remove(root, out, args),
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
    #[serde(flatten)]
    compiled: CompileReport,
}

impl Report for ApplyReport {
    fn render(&self) -> String {
        format!(
            "applied to {} atomically (generation {}): {}",
            self.interface,
            self.generation,
            self.compiled.summary()
        )
    }
}

fn apply(root: &StateRoot, out: &Output, args: &FilterApplyArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    let loaded = compile::load_rules(&args.rules).map_err(Failure::from)?;
    caps::require("filter apply", &[caps::BPF])?;
    let _lock = root.lock()?;
    state::interface::reconcile(root, &args.interface)?;
    let dir = filter_dir(root, &args.interface)?;
    let pinned = PinnedMaps::open(&dir)?;
    let generation = xdp_mesh_filter::apply(&pinned.maps(), &loaded.rules, &loaded.compiled)?;
    out.emit(&ApplyReport {
        interface: args.interface.clone(),
        generation,
        compiled: CompileReport::of(&loaded, false),
    })?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct ShowReport {
    interface: String,
    #[serde(flatten)]
    active: ActiveRules,
    counters: FilterCounters,
}

impl Report for ShowReport {
    fn render(&self) -> String {
        let a = &self.active;
        let limit = |l: &Option<crate::rules::Limit>| match l {
            Some(l) => format!("{} pps, burst {}", l.pps, l.burst),
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
        let mut table = output::table(&["#", "action", "rule", "packets", "bytes"]);
        for r in &a.rules {
            table.add_row(vec![
                output::right(r.index),
                r.rule.action.as_str().into(),
                summary(&r.rule).into(),
                output::right(output::count(r.packets)),
                output::right(output::bytes(r.bytes)),
            ]);
        }
        table.add_row(vec![
            "".into(),
            a.default.as_str().into(),
            "(default)".into(),
            output::right(output::count(c.defaulted.packets)),
            output::right(output::bytes(c.defaulted.bytes)),
        ]);
        text.push_str(&table.to_string());
        text.push_str(&format!(
            "\npassed {} · dropped {} · rate-limited {} from {} sources · SYN-dropped {} from {} sources",
            output::count(c.verdicts.pass.packets),
            output::count(c.verdicts.drop.packets),
            output::count(c.rate_limited.packets),
            c.rate_limited_sources,
            output::count(c.syn_dropped.packets),
            c.syn_flood_sources
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

fn remove(root: &StateRoot, out: &Output, args: &FilterShowArgs) -> Result<()> {
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
        parts.push(format!("limit {} pps burst {}", l.pps, l.burst));
    }
    if parts.is_empty() {
        parts.push("any IP packet".into());
    }
    if let Some(name) = &rule.name {
        parts.push(format!("({name})"));
    }
    parts.join(" ")
}
