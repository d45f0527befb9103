//! `meshbpf filter ban IFACE add|del|list|load`: the filter's ban set.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{BanOptions, FilterBanArgs, FilterBanCommand};
use crate::kernel::pins::StateRoot;
use crate::kernel::{caps, netdev};
use crate::output::{self, Output, Report};
use crate::programs::xdp_mesh_filter::bans::{self, Ban, BanEntry, BanSummary, Changed};
use crate::programs::xdp_mesh_filter::PinnedMaps;
use crate::rules::bans::{self as ban_input, Ttl};
use crate::state::{self, filter};

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

pub fn run(root: &StateRoot, out: &Output, args: &FilterBanArgs) -> Result<()> {
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
    let dir = filter::filter_dir(root, &args.interface)?;
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
        let dir = filter::running_filter(root, interface)?;
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
