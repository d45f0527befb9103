//! What the ban set of xdp_mesh_filter is fed: TTLs, CIDRs from the
//! command line, and ban lists.
//!
//! A ban list has one entry a line: a CIDR (or a bare address, one host),
//! optionally followed by its TTL; `#` starts a comment, blank lines are
//! ignored:
//!
//! ```text
//! # feed of 2024-05-01
//! 203.0.113.7
//! 198.51.100.0/24   12h
//! 2001:db8:bad::/48 30m   # scanner
//! ```
//!
//! A file with any bad line is refused whole, each bad line named by its
//! number, so a feed never half-loads.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{prefix_text, Expected, Prefix, RuleError};
use crate::error::Failure;
use crate::kernel::files;

/// The longest TTL, 365 days: a ban for longer is a permanent ban, which is no TTL.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a ban lasts, from 1 s to [`MAX_TTL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttl(pub Duration);

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// As written in rule files: `"10m"`.
impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `10m`, `12h`, `1h 30m`, `7days`: humantime's durations.
pub fn ttl(text: &str) -> Result<Ttl, String> {
    let ttl = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write one such as 90s, 10m, 12h or 7d")
    })?;
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(format!(
            "\"{text}\" is outside 1s to 365 days; leave the TTL out for a ban that never expires"
        ));
    }
    Ok(Ttl(ttl))
}

const TTL: Expected = Expected {
    what: "a duration like \"10m\"",
    hint: "write how long a refused source stays banned, such as \"90s\", \"10m\" or \"12h\"",
};

/// A TTL in a rule file.
pub fn ttl_value(value: &Value) -> Result<Ttl, RuleError> {
    let text = value.as_str().ok_or_else(|| TTL.wrong(value))?;
    ttl(text).map_err(|message| RuleError::new(message, TTL.hint))
}

/// A CIDR to ban. IPv4-mapped IPv6 ranges are refused as in rules: no
/// packet carries them, so banning one would ban nothing.
pub fn cidr(text: &str) -> Result<Prefix, RuleError> {
    let prefix = prefix_text(text)?;
    match prefix.mapped_v4_problem() {
        Some(problem) => Err(RuleError::new(
            problem,
            "ban the IPv4 address or CIDR itself",
        )),
        None => Ok(prefix),
    }
}

/// One entry of a ban list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub prefix: Prefix,
    pub ttl: Option<Ttl>,
}

/// At most this many bad lines are spelled out in an error.
const SHOWN_ERRORS: usize = 10;

/// Parses a ban list's text; `name` is how errors call the file.
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Listed>, Failure> {
    let mut entries = Vec::new();
    let (mut shown, mut bad, mut hint) = (Vec::new(), 0, String::new());
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match listed(line) {
            Ok(entry) => entries.push(entry),
            Err((message, fix)) => {
                bad += 1;
                if shown.len() < SHOWN_ERRORS {
                    shown.push(format!("{name}:{}: \"{line}\": {message}", index + 1));
                }
                if hint.is_empty() {
                    hint = fix;
                }
            }
        }
    }
    if bad == 0 {
        return Ok(entries);
    }
    let mut message = format!(
        "{name} has {bad} bad line{}; nothing was loaded",
        if bad == 1 { "" } else { "s" }
    );
    for e in &shown {
        message.push_str(&format!("\n  {e}"));
    }
    if bad > shown.len() {
        message.push_str(&format!("\n  ... and {} more", bad - shown.len()));
    }
    Err(Failure::new(message).hint(format!(
        "{hint}; each line is a CIDR or address, optionally followed by a TTL (\"198.51.100.0/24 12h\"), and # starts a comment"
    )))
}

fn listed(line: &str) -> Result<Listed, (String, String)> {
    let (cidr_text, rest) = match line.split_once(char::is_whitespace) {
        Some((cidr, rest)) => (cidr, rest.trim()),
        None => (line, ""),
    };
    let prefix = cidr(cidr_text).map_err(|e| (e.to_string(), e.hint().to_owned()))?;
    let ttl = match rest {
        "" => None,
        text => Some(ttl(text).map_err(|e| (e, "fix the TTL or leave it out".to_owned()))?),
    };
    Ok(Listed { prefix, ttl })
}

/// Reads and parses a ban list.
pub fn load_list(path: &Path) -> Result<Vec<Listed>, Failure> {
    let text = files::read_text(path, &files::BAN_LIST).map_err(|err| {
        Failure::new(format!("cannot read {}: {}", path.display(), err.reason)).hint(err.hint)
    })?;
    parse_list(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_humantime_durations_within_bounds() {
        assert_eq!(ttl("10m"), Ok(Ttl(Duration::from_secs(600))));
        assert_eq!(ttl("1h 30m"), Ok(Ttl(Duration::from_secs(5400))));
        assert_eq!(Ttl(Duration::from_secs(600)).to_string(), "10m");
        assert!(ttl("500ms").unwrap_err().contains("outside 1s to 365 days"));
        assert!(ttl("soon").unwrap_err().contains("is not a duration"));
    }

    #[test]
    fn a_list_with_comments_ttls_and_both_families_parses() {
        let list = parse_list(
            "feed",
            "# a feed\n203.0.113.7\n\n198.51.100.0/24   12h\n2001:db8:bad::/48 30m # scanner\n",
        )
        .unwrap();
        let shown: Vec<String> = list
            .iter()
            .map(|l| format!("{} {:?}", l.prefix, l.ttl.map(|t| t.to_string())))
            .collect();
        assert_eq!(
            shown,
            [
                "203.0.113.7/32 None",
                "198.51.100.0/24 Some(\"12h\")",
                "2001:db8:bad::/48 Some(\"30m\")"
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_with_their_number_text_and_fix() {
        let err = parse_list(
            "feed",
            "203.0.113.7\n10.0.0.1/24\n10.0.0.0/8 forever\n::ffff:10.0.0.1\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("feed has 3 bad lines; nothing was loaded"),
            "{text}"
        );
        assert!(
            text.contains(
                "feed:2: \"10.0.0.1/24\": 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
            ),
            "{text}"
        );
        assert!(
            text.contains("feed:3: \"10.0.0.0/8 forever\": \"forever\" is not a duration"),
            "{text}"
        );
        assert!(
            text.contains("feed:4: \"::ffff:10.0.0.1\": ::ffff:10.0.0.1/128 is an IPv4-mapped"),
            "{text}"
        );
    }
}
