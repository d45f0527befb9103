//! xdp_mesh_filter's metric families: verdicts, per-rule hits, rate-limited,
//! SYN-dropped and banned packets, promotions into the ban set, how full its
//! rule table and ban set are, and a pending commit-confirm.

use anyhow::Result;

use super::{PinnedMaps, MAX_RULES};
use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::{label, table_size, Family, Kind, Pair, Value};
use crate::programs::xdp_counter;

/// Its own families, and the traffic counters it keeps like xdp_counter.
pub fn families(dirs: &[AttachmentDir]) -> Result<Vec<Family>> {
    let mut verdicts = Pair::new(
        "meshbpf_filter_verdict_packets",
        "meshbpf_filter_verdict",
        [
            "Packets xdp_mesh_filter passed or dropped",
            "Bytes of the packets xdp_mesh_filter passed or dropped",
        ],
    );
    let mut rate_limited = Pair::new(
        "meshbpf_filter_rate_limited_packets",
        "meshbpf_filter_rate_limited",
        [
            "Packets dropped by the per-source rate limit",
            "Bytes of the packets dropped by the per-source rate limit",
        ],
    );
    let mut syn_dropped = Pair::new(
        "meshbpf_filter_syn_dropped_packets",
        "meshbpf_filter_syn_dropped",
        [
            "TCP SYNs dropped by SYN-flood protection",
            "Bytes of the TCP SYNs dropped by SYN-flood protection",
        ],
    );
    let mut hits = Pair::new(
        "meshbpf_filter_rule_packets",
        "meshbpf_filter_rule",
        [
            "Packets that matched a filter rule, by its id and its index in the rule set, carried across applies that keep the id",
            "Bytes of the packets that matched a filter rule, by its id and its index in the rule set",
        ],
    );
    let mut pending = Family::new(
        "meshbpf_filter_confirm_pending",
        Kind::Gauge,
        "1 while an apply --confirm waits for filter confirm, else 0",
    );
    let mut remaining = Family::new(
        "meshbpf_filter_confirm_remaining",
        Kind::Gauge,
        "Time until a pending apply --confirm rolls back by itself (0 when none is pending)",
    )
    .unit("seconds");
    let mut banned = Pair::new(
        "meshbpf_filter_banned_packets",
        "meshbpf_filter_banned",
        [
            "Packets dropped because their source is in the ban set",
            "Bytes of the packets dropped because their source is in the ban set",
        ],
    );
    let mut promoted = Family::new(
        "meshbpf_filter_ban_promoted",
        Kind::Counter,
        "Sources a rate limit or SYN-flood protection put into the ban set",
    );
    let mut tables = Vec::new();
    for dir in dirs {
        let pinned = PinnedMaps::open(dir)?;
        let maps = pinned.maps();
        let f = super::read_stats(&maps)?;
        let interface = &dir.interface;
        for (verdict, c) in [("pass", f.verdicts.pass), ("drop", f.verdicts.drop)] {
            verdicts.add(
                vec![label("interface", interface), label("verdict", verdict)],
                c.packets,
                c.bytes,
            );
        }
        let on = || vec![label("interface", interface)];
        rate_limited.add(on(), f.rate_limited.packets, f.rate_limited.bytes);
        syn_dropped.add(on(), f.syn_dropped.packets, f.syn_dropped.bytes);
        let b = &f.bans;
        banned.add(on(), b.banned.packets, b.banned.bytes);
        promoted.add(on(), Value::Int(b.promoted));
        tables.extend(table_size(
            interface,
            "bans",
            b.entries,
            2 * b.capacity_hosts + b.capacity_prefixes,
        ));
        let active = super::read_rules(&maps)?;
        for r in &active.rules {
            let labels = vec![
                label("interface", interface),
                label("rule", r.index.to_string()),
                label("id", r.rule.id.as_str()),
            ];
            hits.add(labels, r.packets, r.bytes);
        }
        let waiting = super::confirm::read(&maps)?.filter(|c| c.pending());
        pending.add(on(), Value::Int(u64::from(waiting.is_some())));
        remaining.add(
            on(),
            Value::Float(waiting.map_or(0.0, |c| c.remaining_ms as f64 / 1000.0)),
        );
        tables.extend(table_size(
            interface,
            "rules",
            active.rules.len() as u64,
            MAX_RULES,
        ));
    }
    let mut families: Vec<Family> = [verdicts, hits, rate_limited, syn_dropped, banned]
        .into_iter()
        .flat_map(Pair::into_families)
        .collect();
    families.extend([pending, remaining, promoted]);
    families.extend(tables);
    families.extend(xdp_counter::metrics::families(dirs)?);
    Ok(families)
}
