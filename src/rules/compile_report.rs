//! How a filter rule set compiled, as `filter check`, `apply`, `diff` and
//! `attach --filter` report it: its size, where each field is looked up,
//! what a packet costs at most, and the compiler's warnings.

use serde::Serialize;

use super::compile::{self, CompileStats};

#[derive(Debug, Serialize)]
pub struct CompileReport {
    /// Rules in the set.
    pub rules: usize,
    /// How the set compiled; in text only with `--stats`.
    pub stats: CompileStats,
    #[serde(skip)]
    pub detailed: bool,
    pub warnings: Vec<String>,
}

impl CompileReport {
    pub fn of(loaded: &compile::LoadedRules, detailed: bool) -> Self {
        CompileReport {
            rules: loaded.rules.rules.len(),
            stats: loaded.compiled.stats(),
            detailed,
            warnings: loaded.compiled.warnings.clone(),
        }
    }

    /// One line, and with `detailed` the lines of how it compiled.
    pub fn summary(&self) -> String {
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
