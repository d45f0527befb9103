//! The one place that writes results: JSON (compact or pretty) or tables on
//! stdout, notes and human errors on stderr.
//!
//! Commands describe their result as a [`Report`]; how it is printed, and
//! what a closed stdout means (nothing: readers may stop early), lives here.

use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use crate::error::explain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    PrettyJson,
}

/// A command's result: serializable for scripts, renderable for people.
pub trait Report: Serialize {
    fn render(&self) -> String;
}

pub struct Output {
    format: Format,
}

impl Output {
    pub fn new(json: bool, pretty: bool) -> Self {
        let format = match (json, pretty) {
            (_, true) => Format::PrettyJson,
            (true, false) => Format::Json,
            _ => Format::Table,
        };
        Output { format }
    }

    pub fn is_json(&self) -> bool {
        self.format != Format::Table
    }

    pub fn emit<R: Report>(&self, report: &R) -> io::Result<()> {
        let text = match self.format {
            Format::Table => report.render(),
            Format::Json => serde_json::to_string(report).map_err(io::Error::other)?,
            Format::PrettyJson => serde_json::to_string_pretty(report).map_err(io::Error::other)?,
        };
        write_stdout(&text)
    }

    /// Raw text that is data but not a report (a completion script).
    pub fn text(&self, text: &str) -> io::Result<()> {
        write_stdout(text.trim_end())
    }

    /// A remark for the operator that is not data: always on stderr, and
    /// silent in JSON mode so scripts see only the JSON.
    pub fn note(&self, text: &str) {
        if !self.is_json() {
            eprintln!("{text}");
        }
    }

    pub fn error(&self, err: &anyhow::Error) {
        let explained = explain(err);
        if self.is_json() {
            let mut obj = serde_json::Map::new();
            obj.insert("error".into(), explained.message.into());
            if let Some(hint) = explained.hint {
                obj.insert("hint".into(), hint.into());
            }
            if let Some(detail) = explained.detail {
                obj.insert("detail".into(), detail.into());
            }
            let value = serde_json::Value::Object(obj);
            let text = if self.format == Format::PrettyJson {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            let _ = write_stdout(&text.unwrap_or_default());
            return;
        }
        let mut text = format!("error: {}", explained.message);
        if let Some(detail) = explained.detail {
            text.push('\n');
            text.push_str(&detail);
        }
        if let Some(hint) = explained.hint {
            text.push_str("\nhint: ");
            text.push_str(&hint);
        }
        eprintln!("{text}");
    }
}

/// A closed pipe means the reader has what it wanted: not an error.
fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let result = writeln!(out, "{text}").and_then(|_| out.flush());
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(headers.iter().map(Cell::new));
    table
}

pub fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

/// 1234567 -> "1,234,567": counts stay exact and readable.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Binary units, one decimal: 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn pretty_wins_over_compact_json() {
        assert_eq!(Output::new(false, false).format, Format::Table);
        assert_eq!(Output::new(true, false).format, Format::Json);
        assert_eq!(Output::new(false, true).format, Format::PrettyJson);
        assert!(Output::new(true, true).is_json());
    }
}
