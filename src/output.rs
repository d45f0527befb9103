//! The one place that writes results: JSON (compact or pretty) or tables on
//! stdout, notes and human errors on stderr.
//!
//! Commands describe their result as a [`Report`]; how it is printed, and
//! what a closed stdout means (nothing: readers may stop early), lives here.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

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
            Format::Table => printable(&report.render()),
            Format::Json => serde_json::to_string(report).map_err(io::Error::other)?,
            Format::PrettyJson => serde_json::to_string_pretty(report).map_err(io::Error::other)?,
        };
        write_stdout(&text)
    }

    /// One record per line, compact even with --pretty (JSON Lines), for
    /// streaming commands; flushed before returning so a reader sees each
    /// batch as it happens.
    pub fn lines<T: Serialize>(
        &self,
        records: impl IntoIterator<Item = T>,
    ) -> io::Result<Delivery> {
        deliver(|out| {
            for record in records {
                serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// A report that replaces the previous one: on a terminal the screen is
    /// cleared first; elsewhere (a file, a pipe) reports follow each other
    /// after a blank line, without escape codes.
    pub fn redraw<R: Report>(&self, report: &R) -> io::Result<Delivery> {
        let text = printable(&report.render());
        let terminal = io::stdout().is_terminal();
        deliver(|out| {
            if terminal {
                // Home, then clear the screen: one write, so no flicker.
                writeln!(out, "\x1b[H\x1b[2J{text}")
            } else {
                write!(out, "{text}\n\n")
            }
        })
    }

    /// Text that continues a stream (table-mode `events --follow`),
    /// flushed as it comes.
    pub fn stream_text(&self, text: &str) -> io::Result<Delivery> {
        let text = printable(text);
        deliver(|out| writeln!(out, "{text}"))
    }

    /// Raw text that is data but not a report (a completion script, the
    /// Prometheus exposition).
    pub fn text(&self, text: &str) -> io::Result<()> {
        write_stdout(text.trim_end())
    }

    /// A remark for the operator that is not data: always on stderr, and
    /// silent in JSON mode so scripts see only the JSON.
    pub fn note(&self, text: &str) {
        if !self.is_json() {
            eprintln!("{}", printable(text));
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
        eprintln!("{}", printable(&text));
    }
}

/// Text for a terminal: names, keys and paths come from rule files, the
/// kernel and events, and a control character among them (an ESC starting
/// an escape sequence) must not reach the terminal raw. Each is shown
/// escaped (`\u{1b}`); newlines and tabs of the layout stay. JSON escapes
/// them by itself.
fn printable(text: &str) -> String {
    if !text.chars().any(is_unprintable) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_unprintable(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// What became of a write to stdout. A closed pipe means the reader has
/// what it wanted: not an error, but a stream should stop there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Closed,
}

fn write_stdout(text: &str) -> io::Result<()> {
    deliver(|out| writeln!(out, "{text}")).map(|_| ())
}

fn deliver(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<Delivery> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let result = write(&mut out).and_then(|_| out.flush());
    match result {
        Ok(()) => Ok(Delivery::Delivered),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            // Drop must not try the dead pipe again.
            let _ = out.into_parts();
            Ok(Delivery::Closed)
        }
        Err(e) => Err(e),
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

/// A byte rate in binary units: 1536.0 -> "1.5 KiB/s".
pub fn bytes_per_second(rate: f64) -> String {
    format!("{}/s", bytes(rate.max(0.0).round() as u64))
}

/// A count per second, with an optional unit: "12 pkt/s", "0.5/s".
/// Two decimals below 0.1 ("0.02", "<0.01"), one below 10, none above.
pub fn per_second(rate: f64, unit: &str) -> String {
    let rate = rate.max(0.0);
    let number = if rate.fract() == 0.0 || rate >= 9.95 {
        count(rate.round() as u64)
    } else if rate < 0.005 {
        "<0.01".into()
    } else if rate < 0.095 {
        format!("{rate:.2}")
    } else {
        format!("{rate:.1}")
    };
    if unit.is_empty() {
        format!("{number}/s")
    } else {
        format!("{number} {unit}/s")
    }
}

/// A short age: "850ms", "12s", "4m03s", "2h05m", "3d04h".
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
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
    fn rates_and_durations_are_short() {
        assert_eq!(bytes_per_second(0.0), "0 B/s");
        assert_eq!(bytes_per_second(1536.0), "1.5 KiB/s");
        assert_eq!(bytes_per_second(-1.0), "0 B/s");
        assert_eq!(per_second(0.0, ""), "0/s");
        assert_eq!(per_second(0.26, ""), "0.3/s");
        assert_eq!(per_second(0.014, ""), "0.01/s");
        assert_eq!(per_second(0.0001, ""), "<0.01/s");
        assert_eq!(per_second(3.0, ""), "3/s");
        assert_eq!(per_second(9.96, ""), "10/s");
        assert_eq!(per_second(12.4, ""), "12/s");
        assert_eq!(per_second(1234.0, ""), "1,234/s");
        assert_eq!(per_second(2.5, "pkt"), "2.5 pkt/s");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_900)), "12s");
        assert_eq!(duration(Duration::from_secs(243)), "4m03s");
        assert_eq!(
            duration(Duration::from_secs(2 * 3600 + 5 * 60 + 7)),
            "2h05m"
        );
        assert_eq!(duration(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            printable("rule \x1b[2Jname\r\u{9b}31m\x07"),
            "rule \\u{1b}[2Jname\\r\\u{9b}31m\\u{7}"
        );
    }

    #[test]
    fn pretty_wins_over_compact_json() {
        assert_eq!(Output::new(false, false).format, Format::Table);
        assert_eq!(Output::new(true, false).format, Format::Json);
        assert_eq!(Output::new(false, true).format, Format::PrettyJson);
        assert!(Output::new(true, true).is_json());
    }
}
